#!/usr/bin/env bash
# Start a KRaft broker configured the way the official apache/kafka image is: every KAFKA_*
# variable becomes a server property (KAFKA_FOO_BAR -> foo.bar, "__" -> "_", "___" -> "-"),
# CLUSTER_ID names the cluster, and with no KAFKA_* settings at all a single combined
# broker/controller on :9092 comes up.
set -euo pipefail

CONFIG=/opt/kafka/config/server.properties
CLASSPATH="/opt/kafka/libs/*"
# The JVM options are the launcher's, not server properties (as in kafka-run-class.sh).
declare -A NOT_PROPERTIES=(
    [KAFKA_HEAP_OPTS]=1 [KAFKA_JVM_PERFORMANCE_OPTS]=1 [KAFKA_OPTS]=1 [KAFKA_LOG4J_OPTS]=1
    [KAFKA_GC_LOG_OPTS]=1 [KAFKA_JMX_OPTS]=1 [KAFKA_DEBUG]=1 [KAFKA_VERSION]=1
)

property_name() {
    local name=${1#KAFKA_}
    name=${name,,}
    name=${name//___/-}
    name=${name//__/@}  # a placeholder, so the single-underscore rule below leaves it alone
    name=${name//_/.}
    printf '%s' "${name//@/_}"
}

: >"$CONFIG"
given=0
while IFS='=' read -r var _; do
    [[ $var == KAFKA_* && -z ${NOT_PROPERTIES[$var]:-} ]] || continue
    printf '%s=%s\n' "$(property_name "$var")" "${!var}" >>"$CONFIG"
    given=1
done < <(env)

if [[ $given == 0 ]]; then
    # The official image's default: one node that is broker and controller.
    cat >>"$CONFIG" <<'PROPS'
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@localhost:9093
listeners=PLAINTEXT://:9092,CONTROLLER://:9093
advertised.listeners=PLAINTEXT://localhost:9092
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
PROPS
fi
grep -q '^log\.dirs=' "$CONFIG" || echo "log.dirs=/var/lib/kafka/data" >>"$CONFIG"

cat >/opt/kafka/config/log4j.properties <<'LOG4J'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
LOG4J

HEAP=${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}
LOG4J_OPTS=${KAFKA_LOG4J_OPTS:--Dlog4j.configuration=file:/opt/kafka/config/log4j.properties}
# The official image's default cluster id, so a volume formatted by either image is reusable.
CLUSTER_ID=${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}

# word splitting of the option strings is intended, as in kafka-run-class.sh
# shellcheck disable=SC2086
java -Xmx256m -XX:+UseSerialGC $LOG4J_OPTS -cp "$CLASSPATH" kafka.tools.StorageTool \
    format -t "$CLUSTER_ID" -c "$CONFIG" --ignore-formatted
# shellcheck disable=SC2086
exec java $HEAP ${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20} \
    ${KAFKA_OPTS:-} $LOG4J_OPTS -cp "$CLASSPATH" kafka.Kafka "$CONFIG"
