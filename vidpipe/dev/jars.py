"""The Kafka broker's jars, fetched once from Maven Central into a cache.

`fetch_kafka_jars` writes a small POM naming the broker and its logging binding and lets Maven's
dependency plugin copy them (and their runtime dependencies) into
`$VIDPIPE_KAFKA_CACHE/kafka-<version>/libs`. kafka-clients brings its codecs (snappy-java,
lz4-java, zstd-jni) as runtime dependencies, so the console producer the tests publish with can
compress with each.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from vidpipe.errors import KafkaStartError

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "SCALA_VERSION",
    "fetch_kafka_jars",
    "kafka_libs_dir",
    "kafka_major",
]

log = logging.getLogger(__name__)

DEFAULT_KAFKA_VERSION = "3.9.1"
SCALA_VERSION = "2.13"
# Pinned so `dependency:` resolves the same plugin everywhere (Maven's own default is ancient).
_DEPENDENCY_PLUGIN_VERSION = "3.8.1"

# Kafka logs through the SLF4J 1.7 API and needs a binding: reload4j on 3.x (what the 3.9
# tarball ships); Log4j 2 on 4.x. Still SLF4J 1.x there, so the 1.x binding
# (log4j-slf4j-impl), not log4j-slf4j2-impl, which 1.7 would ignore (silent NOP logger).
_LOGGING_ARTIFACTS_3 = ("org.slf4j:slf4j-reload4j:1.7.36",)
_LOGGING_ARTIFACTS_4 = (
    "org.apache.logging.log4j:log4j-slf4j-impl:2.24.3",
    "org.apache.logging.log4j:log4j-core:2.24.3",
)


def kafka_libs_dir(kafka_version: str = DEFAULT_KAFKA_VERSION) -> Path:
    """Where the jars of `kafka_version` live: `$VIDPIPE_KAFKA_CACHE/kafka-<v>/libs`.

    VIDPIPE_KAFKA_CACHE names the cache *root* (default ~/.cache/vidpipe) so that several
    Kafka versions can sit side by side; CI can cache that one directory.
    """
    root = os.environ.get("VIDPIPE_KAFKA_CACHE") or str(Path.home() / ".cache" / "vidpipe")
    return Path(root).expanduser() / f"kafka-{kafka_version}" / "libs"


def kafka_major(kafka_version: str) -> int:
    """The major version: 3 and 4 differ in how the broker logs."""
    return int(kafka_version.split(".", 1)[0])


def _artifacts(kafka_version: str) -> list[str]:
    logging_deps = _LOGGING_ARTIFACTS_3 if kafka_major(kafka_version) < 4 else _LOGGING_ARTIFACTS_4
    return [f"org.apache.kafka:kafka_{SCALA_VERSION}:{kafka_version}", *logging_deps]


def _pom(kafka_version: str) -> str:
    deps = []
    for coords in _artifacts(kafka_version):
        group, artifact, version = coords.split(":")
        deps.append(
            "    <dependency>"
            f"<groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
            f"<version>{version}</version></dependency>"
        )
    dep_xml = "\n".join(deps)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>vidpipe.dev</groupId>
  <artifactId>kafka-jars</artifactId>
  <version>{kafka_version}</version>
  <packaging>pom</packaging>
  <dependencies>
{dep_xml}
  </dependencies>
  <build><plugins><plugin>
    <groupId>org.apache.maven.plugins</groupId>
    <artifactId>maven-dependency-plugin</artifactId>
    <version>{_DEPENDENCY_PLUGIN_VERSION}</version>
  </plugin></plugins></build>
</project>
"""


def _jars_present(libs: Path, kafka_version: str) -> bool:
    return (libs / f"kafka_{SCALA_VERSION}-{kafka_version}.jar").is_file()


def fetch_kafka_jars(
    kafka_version: str = DEFAULT_KAFKA_VERSION, libs: Path | None = None, timeout_s: float = 600
) -> Path:
    """Download the broker's jars (and their runtime dependencies) once; return the libs dir.

    Atomic: Maven writes into a temp dir that is renamed into place only when complete, so an
    interrupted download never leaves a half-filled cache. A lock file serialises concurrent
    fetches (e.g. parallel test workers) so only one of them downloads.
    """
    libs = libs or kafka_libs_dir(kafka_version)
    if _jars_present(libs, kafka_version):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaStartError(
            "Maven (`mvn`) is needed once to fetch the Kafka jars; "
            "run scripts/ensure-system-deps.sh"
        )
    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _jars_present(libs, kafka_version):  # another process fetched while we waited
            return libs
        work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=libs.parent))
        try:
            (work / "pom.xml").write_text(_pom(kafka_version))
            out = work / "libs"
            cmd = [
                mvn,
                "-B",
                "-q",
                "-f",
                str(work / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={out}",
                "-DincludeScope=runtime",
            ]
            started = time.monotonic()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            except subprocess.TimeoutExpired as exc:
                raise KafkaStartError(f"Maven did not finish within {timeout_s:.0f} s") from exc
            if proc.returncode != 0 or not _jars_present(out, kafka_version):
                raise KafkaStartError(
                    f"fetching Kafka {kafka_version} jars with Maven failed "
                    f"(exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}"
                )
            if libs.exists():  # a broken leftover (no broker jar): replace it
                shutil.rmtree(libs)
            out.rename(libs)
            log.info(
                "fetched Kafka %s jars into %s in %.1f s",
                kafka_version,
                libs,
                time.monotonic() - started,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return libs
