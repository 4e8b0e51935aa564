"""Outbound HTTP vidpipe makes on its own behalf: to user-supplied URLs, and how it retries.

`guard` vets user-supplied URLs and pins connections (SSRF), `images` fetches input images
through it, `webhooks` signs and delivers callbacks, `retry` is the one retry policy (Retry-After,
backoff, stop rules) the webhook sender and the provider clients share.
"""
