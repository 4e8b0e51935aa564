"""vidpipe/net"""
