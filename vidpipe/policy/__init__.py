"""vidpipe/policy"""
