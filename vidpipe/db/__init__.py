"""vidpipe/db"""
