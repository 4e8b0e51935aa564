"""vidpipe/usecases"""
