"""The dev tooling: the real servers for development, the demo and the tests. Never imported by
production code, and left out of the wheel (the checkout and the compose image have it).

    servers.py     find or start Kafka and PostgreSQL: the environment, else Docker, else local
    jars.py        the Kafka broker's jars, fetched once from Maven Central
    kafka.py       LocalKafka: a single-node KRaft broker from those jars
    postgres.py    LocalPostgres: a throwaway cluster from the distribution's binaries
    docker.py      the same servers as containers, when a Docker engine answers
    processes.py   free ports, a death signal for children, log tails, sync-to-async
    stack.py       DevStack: a broker, the emulator and every stage (`vidpipe up`, `demo`)
    cli.py         the commands `vidpipe up`, `down`, `demo`, `emulator`
    emulator/      a local stand-in for the paid video APIs
"""
