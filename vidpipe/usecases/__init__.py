"""Steps with I/O that more than one stage takes, written once.

fetch_video  a provider's video into storage (stat, download, validate, store) and its VideoStored
"""
