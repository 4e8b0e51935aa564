#!/usr/bin/env bash
# The official image's healthcheck tool: lists the broker's API versions, or fails.
exec "$(dirname "$0")/kafka-run-class.sh" kafka.admin.BrokerApiVersionsCommand "$@"
