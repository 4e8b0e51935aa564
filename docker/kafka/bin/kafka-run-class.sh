#!/usr/bin/env bash
# Run a Kafka class with the broker's jars, like the distribution's script of the same name.
exec java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j.configuration=file:/opt/kafka/bin/tools-log4j.properties -cp "/opt/kafka/libs/*" "$@"
