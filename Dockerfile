# rankflow's Airflow image: the official Airflow image plus a Java runtime for spark-submit, the
# project's pinned dependencies and the rankflow library itself. docker-compose.yml builds it for
# every Airflow component; the same image is what a Helm / Kubernetes deployment would run.
#
# Pattern: "Extending the image" from the Airflow docker-stack docs (apt packages as root, Python
# packages as the airflow user, never `pip install` as root). Keep the tag in step with the
# apache-airflow pin in requirements.txt (tests/unit/deploy/test_compose.py checks it).
FROM apache/airflow:3.3.2-python3.11

# --- OS packages (root) -----------------------------------------------------------------------
USER root
# spark-submit (pyspark 4.x) needs a Java 17+ runtime. The man directory is created first because
# the JRE's post-install step links a man page and slim Debian images drop /usr/share/man.
# A stable JAVA_HOME symlink keeps the path free of the CPU architecture (amd64 / arm64).
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && ln -sfn "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /usr/lib/jvm/java-17 \
    && apt-get autoremove -yqq --purge \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17

# RANKFLOW_HOME (lake, raw drops, local state) lives on a named volume mounted here; a named volume
# starts as a copy of this directory, so creating it with the right owner avoids a root-owned mount.
RUN mkdir -p /opt/airflow/rankflow-data /opt/airflow/jobs \
    && chown -R airflow:0 /opt/airflow/rankflow-data /opt/airflow/jobs

# --- Python packages (airflow user) -----------------------------------------------------------
USER airflow
WORKDIR /opt/airflow

# Dependencies first, on their own layer: it is rebuilt only when the pins change. The lock is a
# constraint file, so every transitive dependency gets the version CI tested; requirements.txt
# pins apache-airflow to the image's version, so pip cannot up- or downgrade Airflow by accident.
COPY --chown=airflow:0 requirements.txt requirements.lock /opt/airflow/rankflow-src/
RUN pip install --no-cache-dir \
        -r /opt/airflow/rankflow-src/requirements.txt \
        -c /opt/airflow/rankflow-src/requirements.lock

# The library itself (dependencies are already installed, hence --no-deps). README* is a wildcard
# so that the build does not depend on it: setuptools only warns when the readme is missing.
COPY --chown=airflow:0 pyproject.toml README* /opt/airflow/rankflow-src/
COPY --chown=airflow:0 include/ /opt/airflow/rankflow-src/include/
RUN pip install --no-cache-dir --no-deps /opt/airflow/rankflow-src

# Every spark-submit asks for the Delta jars (--packages): fetch them into the airflow user's Ivy
# cache now, so tasks never reach Maven Central at run time. Same step as `make setup`.
RUN RANKFLOW_HOME=/tmp/rankflow-warm python -m rankflow.cli warm-spark \
    && rm -rf /tmp/rankflow-warm

# DAGs, plugins and spark-submit entry points are baked in, so the image runs without the
# development bind mounts of docker-compose.yml (which shadow these copies when present).
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 jobs/ /opt/airflow/jobs/
# The deployment's scripts airflow-init runs (placeholder check, users), as compose mounts them.
COPY --chown=airflow:0 docker/ /opt/rankflow/docker/
