"""vidpipe/media"""
