"""Pure decisions, no I/O: each takes what happened (and the time, where it matters) and says
what to do; the stage handlers carry it out.

fallbacks   which fallbacks run for a request
messages    user-facing text, and the one language resolver
polling     what a poller status check announces, and when the next one is due
projection  which columns of the `projects` row an event moves
redownload  when the redownloader retries, and when it gives up
submission  when a submission waits, and when it fails
prices      the price table and what a job costs
budgets     which budget buckets a request is charged to, and what a refusal says
cost_report the cost report by day, provider and metadata key; lineage totals
"""
