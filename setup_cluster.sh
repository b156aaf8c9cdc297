#!/usr/bin/env bash
# retail-lake: install the stack, run a Spark standalone cluster on this host, and serve the
# lake to analysts over JDBC and Spark Connect (sql-server).
#
#   ./setup_cluster.sh install                 venv + pinned stack + horovod build + Delta jars,
#                                              the SQL endpoint's guard (javac), and the
#                                              Airflow environment (install-airflow)
#   ./setup_cluster.sh install-airflow         Airflow 3 + the Spark provider, in a venv of their own
#   ./setup_cluster.sh start [--workers N]     master + N workers (loopback by default) and
#                                              the metastore (unless --no-metastore)
#   ./setup_cluster.sh start --workers N --netns   each worker in a network namespace of its
#                                              own (root): hosts that share only a network
#   ./setup_cluster.sh status                  what is running, and the spark-submit line
#   ./setup_cluster.sh stop                    stops every process `start` began
#   ./setup_cluster.sh submit-line             prints the spark-submit line for the cluster
#   ./setup_cluster.sh run ARGS...             `retail-lake ARGS...` from the venv (run pipeline)
#   ./setup_cluster.sh test [PYTEST ARGS...]   the test suite (e.g. -m "not slow")
#   ./setup_cluster.sh sql-server start [--root LAKE_ROOT] [--allow-writes] [--metastore URI]
#                                              the analysts' SQL endpoint over the lake:
#                                              JDBC (HiveServer2) and Spark Connect, read-only
#   ./setup_cluster.sh sql-server status|stop
#   ./setup_cluster.sh metastore start|status|stop
#                                              a Hive metastore (Derby), loopback: the
#                                              cluster profile's spark.metastore_uri
#
# Everything heavy lives outside the checkout, under RETAIL_LAKE_HOME
# (default ~/.cache/retail-lake): the virtual environment, the horovod wheel (keyed by
# horovod + torch versions), the Ivy cache holding the Delta jars, cluster pids and logs.
# `start` and `stop` are idempotent: a running master or worker is left as it is, and `stop`
# ends every process of the sessions `start` began (executors and Python workers included).
#
# Environment (all optional):
#   RETAIL_LAKE_HOME      cache root                     (~/.cache/retail-lake)
#   RETAIL_LAKE_VENV      virtual environment            ($RETAIL_LAKE_HOME/venv)
#   RETAIL_LAKE_IVY_DIR   Ivy cache with the Delta jars  ($RETAIL_LAKE_HOME/ivy)
#   RETAIL_LAKE_CLASS_ARCHIVE  the driver JVM's class archive ($RETAIL_LAKE_HOME/jvm/classes.jsa)
#   RETAIL_LAKE_JVM_DIR   the jar compiled from jvm/src ($RETAIL_LAKE_HOME/jvm)
#   RETAIL_LAKE_CLUSTER_DIR  cluster pid files, logs, work dirs ($RETAIL_LAKE_HOME/cluster)
#   RETAIL_LAKE_AIRFLOW_VENV  Airflow's own venv          ($RETAIL_LAKE_HOME/airflow-venv)
#   RETAIL_LAKE_START_TIMEOUT  seconds `start` waits for the master and workers (90)
#   RETAIL_LAKE_SQL_SERVER_DIR  the SQL endpoint's pid file, log, settings and warehouse
#                         ($RETAIL_LAKE_HOME/sql-server)
#   RETAIL_LAKE_SQL_HOST  the SQL endpoint's bind address, both protocols (127.0.0.1)
#   RETAIL_LAKE_SQL_PORT  its JDBC / HiveServer2 (Thrift, binary) port     (10000)
#   RETAIL_LAKE_CONNECT_PORT  its Spark Connect (gRPC) port               (15002)
#   RETAIL_LAKE_SQL_DRIVER_MEMORY  its driver's memory                    (2g)
#   RETAIL_LAKE_SQL_START_TIMEOUT  seconds `sql-server start` waits for both ports (180)
#   RETAIL_LAKE_METASTORE_DIR  the metastore's Derby database, pid file, log ($RETAIL_LAKE_HOME/metastore)
#   RETAIL_LAKE_METASTORE_HOST  its bind address (127.0.0.1)
#   RETAIL_LAKE_METASTORE_PORT  its Thrift port (9083)
#   RETAIL_LAKE_METASTORE_START_TIMEOUT  seconds `metastore start` waits for it (120)
#   PYTHON                interpreter for the venv       (python3.11, else python3)
#   RETAIL_LAKE_SHARED_DATA  the real data sets          (../shared/data beside the checkout)
#   HOROVOD_GPU_OPERATIONS=NCCL   build horovod with NCCL (GPU clusters with the CUDA toolkit)
#   SPARK_MASTER_HOST     master (and local workers') bind address (127.0.0.1)
#   SPARK_MASTER_PORT     master port                    (7077)
#   SPARK_MASTER_WEBUI_PORT                              (8080)
#   SPARK_WORKER_CORES    cores per worker               (1)
#   SPARK_WORKER_MEMORY   memory per worker              (2g: the cluster profile's executors)
#   SPARK_WORKER_WEBUI_PORT  first worker UI port, +1 each (8081)
#   RETAIL_LAKE_NETNS_SUBNET  --netns: the bridge's /24, first three octets (10.213.0)
#   RETAIL_LAKE_NETNS_BRIDGE, RETAIL_LAKE_NETNS_PREFIX  --netns: the bridge's name (rlbr0)
#                         and the namespaces' prefix (rl-w: rl-w1, rl-w2, ...)
#   RETAIL_LAKE_WORKER_HOSTS  file with one host per line: workers are started there over
#                         ssh (multi-host; the same venv path must exist on every host, and
#                         SPARK_MASTER_HOST must be an address those hosts reach). Tested:
#                         workers on this host, each in a namespace of its own (--netns).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RL_HOME="${RETAIL_LAKE_HOME:-$HOME/.cache/retail-lake}"
VENV="${RETAIL_LAKE_VENV:-$RL_HOME/venv}"
IVY_DIR="${RETAIL_LAKE_IVY_DIR:-$RL_HOME/ivy}"
CLASS_ARCHIVE="${RETAIL_LAKE_CLASS_ARCHIVE:-$RL_HOME/jvm/classes.jsa}"
JVM_DIR="${RETAIL_LAKE_JVM_DIR:-$RL_HOME/jvm}"  # the jar of jvm/src
WHEEL_DIR="$RL_HOME/wheels"
CLUSTER_DIR="${RETAIL_LAKE_CLUSTER_DIR:-$RL_HOME/cluster}"
AIRFLOW_VENV="${RETAIL_LAKE_AIRFLOW_VENV:-$RL_HOME/airflow-venv}"
HOROVOD_VERSION="0.28.1"

log() { printf '[setup_cluster] %s\n' "$*" >&2; }
die() { printf '[setup_cluster] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------- checks
check_java() {
  command -v java >/dev/null 2>&1 || die "Java not found: install OpenJDK 17 or newer (Debian: apt-get install openjdk-17-jre-headless) and put it on PATH or set JAVA_HOME."
  local ver major
  ver="$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
  major="${ver%%.*}"
  [ "$major" = "1" ] && major="$(echo "$ver" | cut -d. -f2)"
  [[ "$major" =~ ^[0-9]+$ ]] || die "could not read the Java version from 'java -version' (got '$ver')"
  [ "$major" -ge 17 ] || die "Java $ver found; Spark 4 needs Java 17 or newer (install OpenJDK 17 and set JAVA_HOME)."
  log "java $ver"
}

pick_python() {
  local py="${PYTHON:-}"
  if [ -z "$py" ]; then
    if command -v python3.11 >/dev/null 2>&1; then py=python3.11; else py=python3; fi
  fi
  command -v "$py" >/dev/null 2>&1 || die "Python interpreter '$py' not found (need 3.11)"
  local v
  v="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  [ "$v" = "3.11" ] || die "Python $v at '$py'; the pinned stack needs Python 3.11 (set PYTHON=...)"
  echo "$py"
}

check_build_tools() {
  local missing=()
  for t in cmake g++ make; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      log "installing build tools from Debian: ${missing[*]}"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ make >/dev/null
    else
      die "horovod's build needs: ${missing[*]} (Debian: apt-get install cmake g++ make)"
    fi
  fi
}

# Spark ML's ALS solves its normal equations with BLAS/LAPACK through dev.ludovic.netlib,
# which uses the system's libblas.so.3 / liblapack.so.3 when present (OpenBLAS here) and a
# Java fallback otherwise: 1.4-1.5x faster ALS training here (bench/RESULTS.md). Optional:
# without root or apt-get, or when the install fails, Spark keeps its Java BLAS.
install_native_blas() {
  local libs
  libs="$(ldconfig -p 2>/dev/null || true)"
  if grep -q 'libblas.so.3 ' <<<"$libs" && grep -q 'liblapack.so.3 ' <<<"$libs"; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing OpenBLAS from Debian (native BLAS for Spark ML)"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null 2>&1; then
      apt-get update -qq >/dev/null 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null 2>&1 ||
        log "warning: OpenBLAS could not be installed; Spark ML uses its Java BLAS (slower ALS)"
    fi
  else
    log "note: no system BLAS; Spark ML uses its Java BLAS (Debian: apt-get install libopenblas0-pthread)"
  fi
}

# ---------------------------------------------------------------------------- install
pip_in_venv() { "$VENV/bin/python" -m pip "$@"; }

# The recommendations demo's year of Online Retail history (3 MB) is generated from the full
# file in the shared data, not kept in the repository (demo_data/online_retail/SOURCE.md).
demo_history() {
  local target="$HERE/lib/retail_lake/demo_data/online_retail/online_retail_history.csv.gz"
  local full="${RETAIL_LAKE_SHARED_DATA:-$HERE/../shared/data}/online_retail/online_retail.csv.gz"
  [ -f "$target" ] && return 0
  if [ -f "$full" ]; then
    log "writing the demo's Online Retail history from $full"
    "$VENV/bin/python" -m retail_lake.demo --out "$HERE/lib/retail_lake/demo_data" --history-from "$full" >&2
  else
    log "warning: $full not found: the demo runs without its year of Online Retail history, and"
    log "  recommend will not beat popularity on one day of customers (set RETAIL_LAKE_SHARED_DATA)"
  fi
}

install_stack() {
  local py stamp want
  py="$(pick_python)"
  mkdir -p "$RL_HOME" "$WHEEL_DIR" "$IVY_DIR"
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV"
    "$py" -m venv "$VENV"
    pip_in_venv install -q --upgrade "pip==25.2"
  fi
  # The pinned stack is reinstalled only when constraints.txt or pyproject.toml changed.
  want="$(cat "$HERE/constraints.txt" "$HERE/pyproject.toml" | sha256sum | cut -d' ' -f1)"
  stamp="$VENV/.retail-lake-stack"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing the pinned stack (first time: several GB, a few minutes)"
    pip_in_venv install -q --progress-bar off -c "$HERE/constraints.txt" \
      "setuptools" "wheel" \
      pyspark delta-spark pyarrow numpy pandas torch great-expectations mlflow \
      pyyaml matplotlib deltalake polars pytest ruff papermill ipykernel nbclient \
      dill diskcache future psutil pyzmq six fsspec \
      "pyspark[connect]" "pyhive[hive_pure_sasl]"
    # petastorm declares setuptools < 70, torch needs >= 77: its real needs are installed above.
    pip_in_venv install -q --no-deps -c "$HERE/constraints.txt" petastorm
    echo "$want" >"$stamp"
  else
    log "pinned stack already installed"
  fi
  # The project itself: editable, so the checkout's code is what runs (cheap, always redone).
  pip_in_venv install -q --no-deps --no-build-isolation -e "$HERE"
  install_horovod
  install_native_blas
  resolve_delta_jars
  # The project's Java classes: the SQL endpoint's read-only guard and the loopback
  # metastore (sql-server start and metastore start also build the jar when missing).
  ( jvm_jar >/dev/null ) || log "warning: no jar of jvm/src (see above): 'sql-server start' and 'metastore start' will try again"
  make_class_archive
  demo_history
  install_airflow
  "$VENV/bin/horovodrun" --check-build | tee "$RL_HOME/horovod-check-build.txt"
  grep -q '\[X\] PyTorch' "$RL_HOME/horovod-check-build.txt" || die "horovod was built without PyTorch"
  grep -q '\[X\] Gloo' "$RL_HOME/horovod-check-build.txt" || die "horovod was built without Gloo"
  log "done: activate with 'source $VENV/bin/activate' (or call $VENV/bin/retail-lake)"
}

# Airflow 3 and apache-airflow-providers-apache-spark need pyyaml, numpy, pandas and pyarrow
# versions the project's pins exclude, and the provider's pyspark-client would overwrite
# PySpark: they live in a venv of their own (constraints-airflow.txt: a working set, frozen).
# The DAG's tasks call the project venv's spark-submit (`retail-lake airflow-dag`).
install_airflow() {
  local py want stamp="$AIRFLOW_VENV/.retail-lake-airflow"
  py="$(pick_python)"
  want="$(sha256sum "$HERE/constraints-airflow.txt" | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    log "Airflow already installed in $AIRFLOW_VENV"
    return 0
  fi
  log "installing Airflow into $AIRFLOW_VENV (first time: ~700 MB, a minute or two)"
  [ -x "$AIRFLOW_VENV/bin/python" ] || "$py" -m venv "$AIRFLOW_VENV"
  "$AIRFLOW_VENV/bin/python" -m pip install -q --progress-bar off --upgrade "pip==25.2"
  "$AIRFLOW_VENV/bin/python" -m pip install -q --progress-bar off \
    -c "$HERE/constraints-airflow.txt" apache-airflow apache-airflow-providers-apache-spark
  "$AIRFLOW_VENV/bin/python" -m pip check >&2 || die "the Airflow environment has broken requirements"
  echo "$want" >"$stamp"
  log "Airflow: $("$AIRFLOW_VENV/bin/airflow" version 2>/dev/null) ($AIRFLOW_VENV/bin/airflow)"
}

horovod_wheel_key() {
  local torch_v ops
  torch_v="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
  ops="${HOROVOD_GPU_OPERATIONS:-cpu}"
  echo "horovod-${HOROVOD_VERSION}_torch-${torch_v}_${ops,,}_py311"
}

install_horovod() {
  local key dir whl
  key="$(horovod_wheel_key)"
  dir="$WHEEL_DIR/$key"
  if "$VENV/bin/python" -c "import horovod, horovod.torch, sys; sys.exit(horovod.__version__ != '$HOROVOD_VERSION')" 2>/dev/null \
     && [ "$(cat "$VENV/.retail-lake-horovod" 2>/dev/null)" = "$key" ]; then
    log "horovod $HOROVOD_VERSION already installed ($key)"
    return
  fi
  whl="$(ls "$dir"/horovod-*.whl 2>/dev/null | head -n1 || true)"
  if [ -z "$whl" ]; then
    build_horovod "$dir"
    whl="$(ls "$dir"/horovod-*.whl | head -n1)"
  else
    log "using cached horovod wheel $whl"
  fi
  # No extras: horovod[pytorch] pulls a second torch, horovod[spark] caps pyarrow < 11.
  # horovod.spark.run works with the stack already installed.
  pip_in_venv install -q --no-deps --force-reinstall "$whl"
  pip_in_venv install -q -c "$HERE/constraints.txt" cloudpickle psutil pyyaml packaging cffi
  echo "$key" >"$VENV/.retail-lake-horovod"
}

build_horovod() {
  local out="$1" src
  check_build_tools
  src="$(mktemp -d)"
  log "building horovod $HOROVOD_VERSION from source (3-6 minutes on 2 cores; cached afterwards in $out)"
  pip_in_venv download -q --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$src"
  tar -xzf "$src/horovod-$HOROVOD_VERSION.tar.gz" -C "$src"
  local tree="$src/horovod-$HOROVOD_VERSION"
  # torch >= 2.1 headers need C++17 (horovod#3996; fixed upstream after the last release).
  sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' \
    "$tree/CMakeLists.txt" "$tree/horovod/torch/CMakeLists.txt"
  # A CUDA build of torch would make CMake compile the extension with CUDA and fail without
  # the toolkit: unless a GPU build is asked for, force the CPU (Gloo) extension.
  "$VENV/bin/python" - "$tree/cmake/Modules/FindPytorch.cmake" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
anchor = 'string(TOUPPER "${Pytorch_CUDA}" Pytorch_CUDA)\n'
patch = anchor + 'if(NOT DEFINED ENV{HOROVOD_GPU_OPERATIONS})\n    set(Pytorch_CUDA FALSE)\nendif()\n'
if "ENV{HOROVOD_GPU_OPERATIONS}" not in text:
    assert anchor in text, "FindPytorch.cmake changed: cannot apply the CPU patch"
    text = text.replace(anchor, patch, 1)
    open(path, "w").write(text)
PY
  mkdir -p "$out"
  (
    cd "$tree"
    export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
      HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_CPU_OPERATIONS=GLOO
    export MAKEFLAGS="-j$(nproc)"
    if [ -n "${HOROVOD_GPU_OPERATIONS:-}" ]; then
      gpu_build_env
    fi
    PATH="$VENV/bin:$PATH" "$VENV/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$out" . \
      >"$out/build.log" 2>&1 || { tail -n 40 "$out/build.log" >&2; die "horovod build failed; full log: $out/build.log"; }
  )
  rm -rf "$src"
  log "horovod wheel cached in $out"
}

# The GPU (NCCL) build, as proven on an H100 (torch 2.11+cu130, gcc 13, cmake 4.4, CUDA 13):
# newer GCCs no longer pull <string>/<stdexcept>/<cstdint> in transitively, cmake 4 rejects
# gloo's old cmake_minimum_required, and NCCL is taken from the nvidia-nccl wheel that a CUDA
# torch installs unless HOROVOD_NCCL_HOME (or _INCLUDE/_LIB) is given.
gpu_build_env() {
  export CXXFLAGS="${CXXFLAGS:-} -include cstdint -include string -include stdexcept"
  export CMAKE_POLICY_VERSION_MINIMUM=3.5
  if [ -z "${HOROVOD_NCCL_HOME:-}${HOROVOD_NCCL_LIB:-}" ]; then
    local nccl
    nccl="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "nccl"))' 2>/dev/null || true)"
    if [ -d "$nccl/lib" ]; then
      [ -e "$nccl/lib/libnccl.so" ] || ln -s "$(ls "$nccl"/lib/libnccl.so.* | head -n1)" "$nccl/lib/libnccl.so"
      export HOROVOD_NCCL_INCLUDE="$nccl/include" HOROVOD_NCCL_LIB="$nccl/lib" HOROVOD_NCCL_LINK=SHARED
      log "NCCL from the nvidia-nccl wheel: $nccl"
    fi
  fi
}

resolve_delta_jars() {
  log "resolving the Delta jars into $IVY_DIR"
  RETAIL_LAKE_IVY_DIR="$IVY_DIR" "$VENV/bin/python" -m retail_lake.session --resolve-jars \
    || die "could not resolve the Delta jars from Maven Central (see the error above)"
}

# The driver JVM's class archive (AppCDS): sessions start seconds sooner from it. Remade
# only for another JDK, pyspark or delta-spark (retail_lake.class_archive); optional.
make_class_archive() {
  log "the driver's class archive: $CLASS_ARCHIVE"
  RETAIL_LAKE_IVY_DIR="$IVY_DIR" RETAIL_LAKE_CLASS_ARCHIVE="$CLASS_ARCHIVE" \
    "$VENV/bin/python" -m retail_lake.class_archive >&2 \
    || log "warning: no class archive (see above): sessions start a few seconds slower"
}

# ---------------------------------------------------------------------------- cluster
MASTER_HOST="${SPARK_MASTER_HOST:-127.0.0.1}"
# A cluster started with --netns listens on its bridge's address (status, stop, submit-line).
if [ -f "$CLUSTER_DIR/master.host" ]; then
  MASTER_HOST="$(cat "$CLUSTER_DIR/master.host")"
fi
MASTER_PORT="${SPARK_MASTER_PORT:-7077}"
MASTER_UI="${SPARK_MASTER_WEBUI_PORT:-8080}"
WORKER_CORES="${SPARK_WORKER_CORES:-1}"
WORKER_MEMORY="${SPARK_WORKER_MEMORY:-2g}"
WORKER_UI="${SPARK_WORKER_WEBUI_PORT:-8081}"
# Seconds to wait for the master's port and for the workers to register.
START_TIMEOUT="${RETAIL_LAKE_START_TIMEOUT:-90}"

spark_home() { "$VENV/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))'; }
master_url() { echo "spark://$MASTER_HOST:$MASTER_PORT"; }
delta_version() {
  "$VENV/bin/python" -c 'from importlib.metadata import version; print(version("delta-spark"))'
}

spawn() {  # spawn NAME CLASS ARGS... : a JVM leading its own session; pid and log in CLUSTER_DIR
  # SPAWN_NETNS / SPAWN_IP (optional): the network namespace it runs in and its address.
  local name="$1"; shift
  local sh; sh="$(spark_home)"
  local -a inside=()
  [ -z "${SPAWN_NETNS:-}" ] || inside=(ip netns exec "$SPAWN_NETNS")
  mkdir -p "$CLUSTER_DIR"
  rm -f "$CLUSTER_DIR/$name.pid"
  # The child writes its own pid before exec'ing spark-class (which execs java): the pid
  # file names the JVM, and the JVM leads a session holding everything it starts (executors,
  # Python workers), which is what `stop` signals.
  SPARK_HOME="$sh" PYSPARK_PYTHON="$VENV/bin/python" SPARK_LOCAL_IP="${SPAWN_IP:-$MASTER_HOST}" \
    PIDFILE="$CLUSTER_DIR/$name.pid" \
    "${inside[@]}" setsid bash -c 'echo $$ >"$PIDFILE"; exec "$0" "$@"' "$sh/bin/spark-class" "$@" \
    >"$CLUSTER_DIR/$name.log" 2>&1 </dev/null &
  local i
  for i in $(seq 1 50); do [ -s "$CLUSTER_DIR/$name.pid" ] && return 0; sleep 0.1; done
  die "$name did not start; log: $CLUSTER_DIR/$name.log"
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# alive PIDFILE: the pid it names runs a Spark daemon or the metastore (not a recycled pid).
alive() {
  local pid
  [ -f "$1" ] || return 1
  pid="$(cat "$1")"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  ps -o args= -p "$pid" 2>/dev/null | grep -Eq 'org\.apache\.spark\.deploy\.|retail_lake\.LoopbackMetastore'
}

# session_pids SID: live (non-zombie) processes of the session SID leads.
session_pids() {
  ps -e -o pid=,sid=,stat= | awk -v sid="$1" '$2 == sid && $3 !~ /^Z/ {print $1}'
}

master_json() {  # the master UI's /json (workers and their state), or nothing
  "$VENV/bin/python" - "http://$MASTER_HOST:$MASTER_UI/json/" <<'PY' 2>/dev/null || true
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
with opener.open(sys.argv[1], timeout=5) as resp:
    sys.stdout.write(resp.read().decode())
PY
}

alive_workers() {  # number of workers the master lists as ALIVE
  master_json | "$VENV/bin/python" -c '
import json, sys
try:
    data = json.load(sys.stdin)
except ValueError:
    print(0)
else:
    print(sum(1 for w in data.get("workers", []) if w.get("state") == "ALIVE"))'
}

# ---------------------------------------------------------------------------- --netns
# Each worker in a network namespace of its own (rl-w<i>), joined to a bridge on the host
# (rlbr0, <subnet>.1) by a veth pair: the workers reach the master, the driver and each
# other only over that network, as separate hosts would. The master (and the driver, which
# the submit line binds there) listen on the bridge's address. `stop` removes all of it.
NETNS_SUBNET="${RETAIL_LAKE_NETNS_SUBNET:-10.213.0}"
NETNS_BRIDGE="${RETAIL_LAKE_NETNS_BRIDGE:-rlbr0}"
NETNS_PREFIX="${RETAIL_LAKE_NETNS_PREFIX:-rl-w}"
netns_name() { echo "$NETNS_PREFIX$1"; }
netns_veth() { echo "${NETNS_PREFIX}v$1"; }
netns_ip() { echo "$NETNS_SUBNET.$(($1 + 1))"; }

netns_up() {  # netns_up N: the bridge and N namespaces (kept when already there)
  [ "$(id -u)" = 0 ] || die "--netns needs root (it creates network namespaces)"
  command -v ip >/dev/null 2>&1 || die "--netns needs iproute2's 'ip' (Debian: apt-get install iproute2)"
  mkdir -p "$CLUSTER_DIR"
  if ! ip link show "$NETNS_BRIDGE" >/dev/null 2>&1; then
    ip link add "$NETNS_BRIDGE" type bridge || die "could not create the bridge $NETNS_BRIDGE"
    ip addr add "$NETNS_SUBNET.1/24" dev "$NETNS_BRIDGE"
    ip link set "$NETNS_BRIDGE" up
  fi
  echo "$NETNS_BRIDGE" >"$CLUSTER_DIR/netns.bridge"
  local i ns
  for i in $(seq 1 "$1"); do
    ns="$(netns_name "$i")"
    if ! ip netns list | grep -qx "$ns\( .*\)\?"; then
      ip netns add "$ns"
      ip link add "$(netns_veth "$i")" type veth peer name eth0 netns "$ns"
      ip link set "$(netns_veth "$i")" master "$NETNS_BRIDGE" up
      ip -n "$ns" addr add "$(netns_ip "$i")/24" dev eth0
      ip -n "$ns" link set eth0 up
      ip -n "$ns" link set lo up
    fi
    echo "$ns" >>"$CLUSTER_DIR/netns.list"
  done
  sort -u -o "$CLUSTER_DIR/netns.list" "$CLUSTER_DIR/netns.list"
  MASTER_HOST="$NETNS_SUBNET.1"
  echo "$MASTER_HOST" >"$CLUSTER_DIR/master.host"
  log "network: bridge $NETNS_BRIDGE at $MASTER_HOST/24, $1 worker namespace(s)"
}

netns_down() {  # the namespaces and the bridge netns_up made
  local ns i
  if [ -f "$CLUSTER_DIR/netns.list" ]; then
    while read -r ns; do
      [ -n "$ns" ] || continue
      i="${ns#"$NETNS_PREFIX"}"
      ip link del "$(netns_veth "$i")" 2>/dev/null || true
      ip netns del "$ns" 2>/dev/null || true
    done <"$CLUSTER_DIR/netns.list"
    rm -f "$CLUSTER_DIR/netns.list"
  fi
  if [ -f "$CLUSTER_DIR/netns.bridge" ]; then
    ip link del "$(cat "$CLUSTER_DIR/netns.bridge")" 2>/dev/null || true
    rm -f "$CLUSTER_DIR/netns.bridge"
  fi
  rm -f "$CLUSTER_DIR/master.host"
}

cluster_start() {
  local workers=2 netns=0 with_metastore=1
  while [ $# -gt 0 ]; do
    case "$1" in
      --workers) [ $# -ge 2 ] || die "--workers needs a number"; workers="$2"; shift 2 ;;
      --workers=*) workers="${1#*=}"; shift ;;
      --netns) netns=1; shift ;;
      --no-metastore) with_metastore=0; shift ;;
      *) die "start: unknown option '$1' (use --workers N [--netns] [--no-metastore])" ;;
    esac
  done
  [[ "$workers" =~ ^[0-9]+$ ]] && [ "$workers" -ge 1 ] || die "--workers must be a positive integer (got '$workers')"
  [ "$workers" -le 250 ] || die "--workers: at most 250"
  [ -x "$VENV/bin/python" ] || die "no virtual environment at $VENV: run './setup_cluster.sh install' first"
  check_java
  if [ "$netns" = 1 ]; then
    [ -z "${RETAIL_LAKE_WORKER_HOSTS:-}" ] || die "--netns starts the workers here: unset RETAIL_LAKE_WORKER_HOSTS"
    netns_up "$workers"
  fi
  if alive "$CLUSTER_DIR/master.pid"; then
    log "master already running (pid $(cat "$CLUSTER_DIR/master.pid"))"
  else
    local port
    for port in "$MASTER_PORT" "$MASTER_UI"; do
      port_open "$MASTER_HOST" "$port" && die "$MASTER_HOST:$port is in use by another process (set SPARK_MASTER_PORT / SPARK_MASTER_WEBUI_PORT)"
    done
    spawn master org.apache.spark.deploy.master.Master \
      --host "$MASTER_HOST" --port "$MASTER_PORT" --webui-port "$MASTER_UI"
    wait_for_master
    log "master up at $(master_url) (UI http://$MASTER_HOST:$MASTER_UI)"
  fi
  if [ -n "${RETAIL_LAKE_WORKER_HOSTS:-}" ]; then
    workers="$(start_remote_workers)"
  else
    local i
    for i in $(seq 1 "$workers"); do
      if alive "$CLUSTER_DIR/worker-$i.pid"; then
        log "worker $i already running (pid $(cat "$CLUSTER_DIR/worker-$i.pid"))"
        continue
      fi
      local host="$MASTER_HOST" ns=""
      if [ "$netns" = 1 ]; then host="$(netns_ip "$i")"; ns="$(netns_name "$i")"; fi
      SPAWN_NETNS="$ns" SPAWN_IP="$host" spawn "worker-$i" org.apache.spark.deploy.worker.Worker \
        --host "$host" --cores "$WORKER_CORES" --memory "$WORKER_MEMORY" \
        --webui-port "$((WORKER_UI + i - 1))" --work-dir "$CLUSTER_DIR/work-$i" "$(master_url)"
    done
  fi
  wait_for_workers "$workers"
  # The metastore the cluster profile names (spark.metastore_uri); one started here is
  # stopped by `stop`, one started before is left to its owner.
  if [ "$with_metastore" = 1 ]; then
    if metastore_alive; then
      log "metastore already running at $(metastore_uri): used as it is"
    else
      metastore_start
      touch "$CLUSTER_DIR/metastore.started"
    fi
  fi
  cluster_submit_line
}

wait_for_master() {
  local i
  for i in $(seq 1 "$START_TIMEOUT"); do
    alive "$CLUSTER_DIR/master.pid" || die "the master exited; log: $CLUSTER_DIR/master.log"
    port_open "$MASTER_HOST" "$MASTER_PORT" && port_open "$MASTER_HOST" "$MASTER_UI" && return 0
    sleep 1
  done
  die "the master did not open $MASTER_HOST:$MASTER_PORT within ${START_TIMEOUT}s; log: $CLUSTER_DIR/master.log"
}

wait_for_workers() {  # until the master lists at least N workers as ALIVE
  local want="$1" i n=0
  for i in $(seq 1 "$START_TIMEOUT"); do
    n="$(alive_workers)"
    if [ "$n" -ge "$want" ]; then log "$n worker(s) registered with $(master_url)"; return 0; fi
    sleep 1
  done
  die "only $n of $want workers registered within ${START_TIMEOUT}s; logs: $CLUSTER_DIR/worker-*.log"
}

# Multi-host: one worker per line of RETAIL_LAKE_WORKER_HOSTS, over ssh; prints the count.
start_remote_workers() {
  local hosts="$RETAIL_LAKE_WORKER_HOSTS" h sh n=0
  [ -f "$hosts" ] || die "RETAIL_LAKE_WORKER_HOSTS names '$hosts', which is not a file"
  sh="$(spark_home)"
  while read -r h; do
    { [ -z "$h" ] || [[ "$h" == \#* ]]; } && continue
    log "starting a worker on $h"
    ssh -n -o BatchMode=yes "$h" "SPARK_HOME='$sh' PYSPARK_PYTHON='$VENV/bin/python' \
      setsid bash -c 'echo \$\$ >/tmp/retail-lake-worker.pid; exec \"\$0\" \"\$@\"' \
      '$sh/bin/spark-class' org.apache.spark.deploy.worker.Worker \
      --cores '$WORKER_CORES' --memory '$WORKER_MEMORY' '$(master_url)' \
      >/tmp/retail-lake-worker.log 2>&1 </dev/null &" || die "could not start a worker on $h"
    n=$((n + 1))
  done <"$hosts"
  echo "$n"
}

# stop_session PIDFILE: TERM the session its pid leads, wait, KILL whatever is left.
stop_session() {
  local f="$1" pid left _
  pid="$(cat "$f" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || { rm -f "$f"; return 1; }
  left="$(session_pids "$pid")"
  [ -n "$left" ] || { rm -f "$f"; return 1; }
  # Only a session our spawn() began: its leader is a Spark daemon, or it already exited
  # and left children (executors) behind.
  if kill -0 "$pid" 2>/dev/null && ! alive "$f"; then
    log "pid $pid in $f is not a Spark daemon any more: left alone"; rm -f "$f"; return 1
  fi
  kill -TERM -- "-$pid" 2>/dev/null || true
  # shellcheck disable=SC2086
  kill -TERM $left 2>/dev/null || true
  for _ in $(seq 1 60); do
    left="$(session_pids "$pid")"
    [ -z "$left" ] && break
    sleep 0.25
  done
  if [ -n "$left" ]; then
    log "killing what did not stop in 15 s: $(echo $left)"
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$f"
  return 0
}

cluster_stop() {
  local f stopped=0 left=""
  shopt -s nullglob
  # Workers first (they stop their executors), then the master.
  for f in "$CLUSTER_DIR"/worker-*.pid "$CLUSTER_DIR"/master.pid; do
    stop_session "$f" && stopped=$((stopped + 1))
  done
  if [ -n "${RETAIL_LAKE_WORKER_HOSTS:-}" ] && [ -f "$RETAIL_LAKE_WORKER_HOSTS" ]; then
    local h
    while read -r h; do
      { [ -z "$h" ] || [[ "$h" == \#* ]]; } && continue
      ssh -n -o BatchMode=yes "$h" 'p=$(cat /tmp/retail-lake-worker.pid 2>/dev/null) && kill -TERM -- -$p 2>/dev/null; rm -f /tmp/retail-lake-worker.pid' || true
    done <"$RETAIL_LAKE_WORKER_HOSTS"
  fi
  if [ -f "$CLUSTER_DIR/metastore.started" ]; then
    metastore_stop
    rm -f "$CLUSTER_DIR/metastore.started"
  fi
  rm -rf "$CLUSTER_DIR"/work-*
  netns_down
  # Check: nothing of this cluster may remain (daemons are found by their pid files' sessions
  # above, and here by their command lines, in case a pid file was lost).
  left="$(pgrep -f "org\.apache\.spark\.deploy\.(master\.Master|worker\.Worker) .*(--port $MASTER_PORT|$MASTER_HOST:$MASTER_PORT)( |$)" || true)"
  [ -z "$left" ] || die "processes of the cluster at $(master_url) are still running: $(echo $left)"
  log "stopped $stopped process group(s); nothing of $(master_url) is left running"
}

cluster_status() {
  local f any=0 pid
  shopt -s nullglob
  for f in "$CLUSTER_DIR"/master.pid "$CLUSTER_DIR"/worker-*.pid; do
    [ -f "$f" ] || continue
    any=1
    pid="$(cat "$f")"
    if alive "$f"; then
      echo "$(basename "$f" .pid): running (pid $pid, $(session_pids "$pid" | wc -l) process(es))"
    else
      echo "$(basename "$f" .pid): not running (stale pid file $f)"
    fi
  done
  [ "$any" = 1 ] || { echo "no cluster started from $CLUSTER_DIR"; return 0; }
  if alive "$CLUSTER_DIR/master.pid"; then
    echo "master $(master_url): $(alive_workers) worker(s) alive (UI http://$MASTER_HOST:$MASTER_UI)"
    metastore_status || true
    cluster_submit_line
  fi
}

cluster_submit_line() {
  local delta archive=""; delta="$(delta_version)"
  # PYSPARK_PYTHON: spark-submit finds SPARK_HOME with it, and the driver and the executors'
  # Python workers run it. The Delta jars come from the Ivy cache `install` filled; the two
  # Delta SQL settings are static, so they must be set before the session exists. The driver
  # starts from the class archive `install` made, when there is one (retail_lake.class_archive).
  local driver=""
  if [ -f "$CLUSTER_DIR/netns.bridge" ]; then  # workers reach the driver over the bridge only
    driver="    --conf spark.driver.host=$MASTER_HOST \\
"
  fi
  # The catalog: the metastore when one runs, else each session's own (in memory).
  local catalog="--set spark.metastore_uri="
  metastore_alive && catalog="--set spark.metastore_uri=$(metastore_uri)"
  if [ -f "$CLASS_ARCHIVE" ]; then
    archive="    --driver-java-options \"-XX:SharedArchiveFile=$CLASS_ARCHIVE -Xshare:auto -Xlog:cds=off -Xlog:cds+dynamic=off\" \\
"
  fi
  cat <<EOF
Submit jobs to this cluster from the checkout ($HERE); the library travels as an archive
(--py-files), never imported from the checkout. Paths must be readable by every worker
(on several hosts: a shared URI such as hdfs:// or s3a:// for paths.root and paths.landing).
  cd $HERE
  $VENV/bin/python -m retail_lake.package --out dist/retail_lake.zip
  PYSPARK_PYTHON=$VENV/bin/python $VENV/bin/spark-submit --master $(master_url) \\
    --py-files dist/retail_lake.zip \\
    --packages io.delta:delta-spark_2.13:$delta --conf spark.jars.ivy=$IVY_DIR \\
${driver}${archive}    --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \\
    --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \\
    jobs/pipeline.py --profile cluster --set spark.master=$(master_url) $catalog \\
    --set paths.root=$HERE/lake --set paths.landing=$HERE/lib/retail_lake/demo_data
EOF
}

# ---------------------------------------------------------------------------- sql-server
# The analysts' SQL endpoint (lib/retail_lake/sql_endpoint.py): one driver JVM serving JDBC
# (Spark's Thrift server, HiveServer2 protocol) and Spark Connect (its plugin), both bound to
# RETAIL_LAKE_SQL_HOST. It registers the lake's Delta tables as <layer>.<name> at start and
# refuses every command that would change the lake unless started with --allow-writes (the
# Spark SQL extension in jvm/src, compiled here into a jar under $RL_HOME/jvm).
SQL_DIR="${RETAIL_LAKE_SQL_SERVER_DIR:-$RL_HOME/sql-server}"
SQL_HOST="${RETAIL_LAKE_SQL_HOST:-127.0.0.1}"
SQL_PORT="${RETAIL_LAKE_SQL_PORT:-10000}"
CONNECT_PORT="${RETAIL_LAKE_CONNECT_PORT:-15002}"
SQL_DRIVER_MEMORY="${RETAIL_LAKE_SQL_DRIVER_MEMORY:-2g}"
SQL_START_TIMEOUT="${RETAIL_LAKE_SQL_START_TIMEOUT:-180}"
JVM_SOURCES="$HERE/jvm/src"

# jvm_jar: prints the jar of jvm/src (the SQL endpoint's guard, the loopback metastore),
# compiling it first when these sources (and pyspark version) have none yet. Its name
# carries the sources' sha256, so an edit makes a new one.
jvm_jar() {
  local key jar sh javac_bin jar_bin tmp
  local -a sources
  mapfile -t sources < <(find "$JVM_SOURCES" -name '*.java' | sort)
  [ "${#sources[@]}" -gt 0 ] || die "no Java sources under $JVM_SOURCES"
  key="$( (cat "${sources[@]}"; "$VENV/bin/python" -c 'import pyspark; print(pyspark.__version__)') \
    | sha256sum | cut -c1-16)"
  jar="$JVM_DIR/retail-lake-jvm-$key.jar"
  if [ -f "$jar" ]; then echo "$jar"; return 0; fi
  javac_bin="${JAVA_HOME:+$JAVA_HOME/bin/}javac"
  if ! command -v "$javac_bin" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      log "installing a JDK from Debian (javac compiles the classes under $JVM_SOURCES)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless >/dev/null
      } || die "could not install openjdk-17-jdk-headless"
      javac_bin=javac
    else
      die "javac not found: the SQL endpoint's guard and the metastore are compiled from $JVM_SOURCES (Debian: apt-get install openjdk-17-jdk-headless, or set JAVA_HOME to a JDK)"
    fi
  fi
  jar_bin="$(dirname "$(readlink -f "$(command -v "$javac_bin")")")/jar"
  sh="$(spark_home)"
  tmp="$(mktemp -d)"
  log "compiling $JVM_SOURCES into $jar"
  "$javac_bin" --release 17 -nowarn -cp "$sh/jars/*" -d "$tmp/classes" "${sources[@]}" >&2 \
    || { rm -rf "$tmp"; die "could not compile $JVM_SOURCES (see above)"; }
  mkdir -p "$JVM_DIR"
  # Written beside its final name, then renamed: whole or not at all for a start looking at
  # the same time.
  "$jar_bin" --create --file "$jar.$$.partial" -C "$tmp/classes" . \
    || { rm -rf "$tmp" "$jar.$$.partial"; die "could not write $jar"; }
  mv "$jar.$$.partial" "$jar"
  rm -rf "$tmp"
  echo "$jar"
}

# delta_jars: the Delta jars install resolved into the Ivy cache, colon-separated.
delta_jars() {
  local v f out=""
  v="$(delta_version)"
  for f in "$IVY_DIR/jars/io.delta_delta-spark_2.13-$v.jar" "$IVY_DIR/jars/io.delta_delta-storage-$v.jar"; do
    [ -f "$f" ] || die "$f not found: run './setup_cluster.sh install' (it resolves the Delta jars into $IVY_DIR)"
    out="${out:+$out:}$f"
  done
  echo "$out"
}

# sql_alive: the pid file names a live JVM running the endpoint (not a recycled pid).
sql_alive() {
  local pid
  [ -f "$SQL_DIR/server.pid" ] || return 1
  pid="$(cat "$SQL_DIR/server.pid")"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  ps -o args= -p "$pid" 2>/dev/null | grep -q 'org\.apache\.spark\.deploy\.SparkSubmit.*sql_endpoint\.py'
}

sql_describe() {  # the running endpoint's addresses, from what start recorded
  # shellcheck disable=SC1091
  (
    . "$SQL_DIR/server.env"
    echo "SQL endpoint: running (pid $(cat "$SQL_DIR/server.pid")), lake $ROOT, $MODE"
    echo "  JDBC:          jdbc:hive2://$HOST:$PORT   (no user or password)"
    echo "  beeline:       $(spark_home)/bin/beeline -u jdbc:hive2://$HOST:$PORT"
    echo "  Spark Connect: sc://$HOST:$CONNECT"
    local catalog="in memory (every table of the lake registered at start)"
    [ -z "${METASTORE:-}" ] || catalog="Hive metastore $METASTORE"
    echo "  catalog:       $catalog"
    echo "  log:           $SQL_DIR/server.log"
  )
}

sql_server_start() {
  # The lake: --root, else RETAIL_LAKE_ROOT (as for retail-lake), else the checkout's ./lake.
  # The catalog: --metastore URI (a Hive metastore: `metastore start`), else in memory.
  local root="${RETAIL_LAKE_ROOT:-$HERE/lake}" writes=false metastore=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --root) [ $# -ge 2 ] || die "--root needs a folder"; root="$2"; shift 2 ;;
      --root=*) root="${1#*=}"; shift ;;
      --allow-writes) writes=true; shift ;;
      --metastore) [ $# -ge 2 ] || die "--metastore needs a thrift:// URI"; metastore="$2"; shift 2 ;;
      --metastore=*) metastore="${1#*=}"; shift ;;
      *) die "sql-server start: unknown option '$1' (use [--root LAKE_ROOT] [--allow-writes] [--metastore thrift://HOST:PORT])" ;;
    esac
  done
  [ -z "$metastore" ] || [[ "$metastore" =~ ^thrift://[^/:]+:[0-9]+$ ]] \
    || die "--metastore must be thrift://HOST:PORT (got '$metastore')"
  [ -d "$root" ] || die "no lake at '$root' (give its root with --root; run the pipeline first)"
  root="$(cd "$root" && pwd)"
  [ -x "$VENV/bin/python" ] || die "no virtual environment at $VENV: run './setup_cluster.sh install' first"
  local mode=read-only
  [ "$writes" = true ] && mode="writes allowed"
  if sql_alive; then
    local running
    running="$(. "$SQL_DIR/server.env"; echo "$ROOT|$MODE|$HOST|$PORT|$CONNECT|$METASTORE")"
    [ "$running" = "$root|$mode|$SQL_HOST|$SQL_PORT|$CONNECT_PORT|$metastore" ] \
      || die "an endpoint with other settings is running ($running): './setup_cluster.sh sql-server stop' first"
    log "SQL endpoint already running (pid $(cat "$SQL_DIR/server.pid"))"
    sql_describe
    return 0
  fi
  check_java
  local port
  for port in "$SQL_PORT" "$CONNECT_PORT"; do
    port_open "$SQL_HOST" "$port" && die "$SQL_HOST:$port is in use by another process (set RETAIL_LAKE_SQL_PORT / RETAIL_LAKE_CONNECT_PORT)"
  done
  local guard delta sh
  guard="$(jvm_jar)"
  delta="$(delta_jars)"
  sh="$(spark_home)"
  mkdir -p "$SQL_DIR/warehouse"
  rm -f "$SQL_DIR/server.pid" "$SQL_DIR/server.ready"
  printf 'ROOT=%q\nMODE=%q\nHOST=%q\nPORT=%q\nCONNECT=%q\nMETASTORE=%q\n' \
    "$root" "$mode" "$SQL_HOST" "$SQL_PORT" "$CONNECT_PORT" "$metastore" >"$SQL_DIR/server.env"
  local -a catalog=(--conf spark.sql.catalogImplementation=in-memory)
  if [ -n "$metastore" ]; then
    catalog=(--conf spark.sql.catalogImplementation=hive --conf "spark.hadoop.hive.metastore.uris=$metastore")
  fi
  # Delta's jars and the guard on the driver's class path: with --jars alone every session
  # fails to find Delta's catalog. The catalog is in memory (rebuilt from the lake at every
  # start), or the Hive metastore --metastore names (the tables registered there are used
  # as they are; only missing ones are added); anything else the JVM writes lands in SQL_DIR
  # (its working folder), not the caller's.
  # Few partitions, as conf/base.yaml's spark.shuffle_partitions and snapshot_partitions (Delta's
  # default of 50 costs 50 tasks on every read of a small table). The Spark UI is off: it
  # would listen on every interface.
  (
    cd "$SQL_DIR"
    SPARK_HOME="$sh" PYSPARK_PYTHON="$VENV/bin/python" PIDFILE="$SQL_DIR/server.pid" \
      PYTHONPATH="$HERE/lib${PYTHONPATH:+:$PYTHONPATH}" SPARK_LOCAL_IP="$SQL_HOST" \
      setsid bash -c 'echo $$ >"$PIDFILE"; exec "$0" "$@"' "$VENV/bin/spark-submit" \
      --master 'local[*]' --name "retail-lake SQL endpoint" \
      --driver-memory "$SQL_DRIVER_MEMORY" \
      --driver-class-path "$delta:$guard" --jars "${delta//:/,},$guard" \
      --driver-java-options "-Duser.timezone=UTC" \
      --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension,retail_lake.ReadOnlySql \
      --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
      "${catalog[@]}" \
      --conf "spark.sql.warehouse.dir=$SQL_DIR/warehouse" \
      --conf spark.sql.session.timeZone=UTC \
      --conf spark.sql.shuffle.partitions=8 --conf spark.databricks.delta.snapshotPartitions=8 \
      --conf "spark.retail_lake.sql.allow_writes=$writes" \
      --conf "spark.hadoop.hive.server2.thrift.bind.host=$SQL_HOST" \
      --conf "spark.hadoop.hive.server2.thrift.port=$SQL_PORT" \
      --conf spark.plugins=org.apache.spark.sql.connect.SparkConnectPlugin \
      --conf "spark.connect.grpc.binding.address=$SQL_HOST" \
      --conf "spark.connect.grpc.binding.port=$CONNECT_PORT" \
      --conf "spark.driver.host=$SQL_HOST" --conf "spark.driver.bindAddress=$SQL_HOST" \
      --conf spark.ui.enabled=false --conf spark.ui.showConsoleProgress=false \
      --conf spark.log.level=WARN \
      "$HERE/lib/retail_lake/sql_endpoint.py" --root "$root" --ready-file "$SQL_DIR/server.ready" \
      >"$SQL_DIR/server.log" 2>&1 </dev/null &
  )
  local i
  for i in $(seq 1 50); do [ -s "$SQL_DIR/server.pid" ] && break; sleep 0.1; done
  [ -s "$SQL_DIR/server.pid" ] || die "the SQL endpoint did not start; log: $SQL_DIR/server.log"
  log "SQL endpoint starting over $root ($mode); log: $SQL_DIR/server.log"
  for i in $(seq 1 "$SQL_START_TIMEOUT"); do
    # Until spark-submit has exec'd java the pid runs a shell: alive means the pid exists.
    if ! kill -0 "$(cat "$SQL_DIR/server.pid")" 2>/dev/null; then
      tail -n 30 "$SQL_DIR/server.log" >&2
      stop_session "$SQL_DIR/server.pid" >/dev/null 2>&1 || true
      die "the SQL endpoint exited during its start (log above: $SQL_DIR/server.log)"
    fi
    # The driver writes server.ready once the tables are registered and a first JDBC
    # session has been served (the Thrift server's first one takes ~10 s).
    if [ -f "$SQL_DIR/server.ready" ] && sql_alive && port_open "$SQL_HOST" "$SQL_PORT" \
      && port_open "$SQL_HOST" "$CONNECT_PORT"; then
      sql_describe
      return 0
    fi
    sleep 1
  done
  tail -n 30 "$SQL_DIR/server.log" >&2
  stop_session "$SQL_DIR/server.pid" >/dev/null 2>&1 || true
  die "the SQL endpoint did not open $SQL_HOST:$SQL_PORT and $SQL_HOST:$CONNECT_PORT within ${SQL_START_TIMEOUT}s; stopped it (log above: $SQL_DIR/server.log)"
}

sql_server_stop() {
  if [ ! -f "$SQL_DIR/server.pid" ]; then
    log "no SQL endpoint started from $SQL_DIR"
    return 0
  fi
  if stop_session "$SQL_DIR/server.pid"; then
    log "SQL endpoint stopped"
  else
    log "SQL endpoint was not running (stale pid file removed)"
  fi
}

sql_server_status() {
  if sql_alive; then
    sql_describe
  elif [ -f "$SQL_DIR/server.pid" ]; then
    echo "SQL endpoint: not running (stale pid file $SQL_DIR/server.pid; log $SQL_DIR/server.log)"
    return 1
  else
    echo "SQL endpoint: not running (none started from $SQL_DIR)"
    return 1
  fi
}

sql_server() {
  local sub="${1:-}"
  [ $# -gt 0 ] && shift
  case "$sub" in
    start) sql_server_start "$@" ;;
    stop) sql_server_stop ;;
    status) sql_server_status ;;
    *) die "sql-server: use start [--root LAKE_ROOT] [--allow-writes] [--metastore URI] | stop | status" ;;
  esac
}

# ---------------------------------------------------------------------------- metastore
# A Hive metastore from the jars pyspark ships (Hive 2.3), its Derby database in
# METASTORE_DIR, bound to METASTORE_HOST (loopback by default: Hive's own launcher listens
# on every interface, so retail_lake.LoopbackMetastore from jvm/src serves it instead). The
# cluster profile's spark.metastore_uri (thrift://127.0.0.1:9083) points at it: a job
# registers each table there once, when it creates it, and every session (jobs, `retail-lake
# sql`, notebooks, the SQL endpoint started with --metastore) finds the tables by name.
METASTORE_DIR="${RETAIL_LAKE_METASTORE_DIR:-$RL_HOME/metastore}"
METASTORE_HOST="${RETAIL_LAKE_METASTORE_HOST:-127.0.0.1}"
METASTORE_PORT="${RETAIL_LAKE_METASTORE_PORT:-9083}"
METASTORE_START_TIMEOUT="${RETAIL_LAKE_METASTORE_START_TIMEOUT:-120}"
metastore_uri() { echo "thrift://$METASTORE_HOST:$METASTORE_PORT"; }

# metastore_alive: the pid file names a live JVM serving the metastore (not a recycled pid).
metastore_alive() {
  local pid
  [ -f "$METASTORE_DIR/metastore.pid" ] || return 1
  pid="$(cat "$METASTORE_DIR/metastore.pid")"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  ps -o args= -p "$pid" 2>/dev/null | grep -q 'retail_lake\.LoopbackMetastore'
}

metastore_hive_site() {  # the metastore's configuration: Derby in METASTORE_DIR
  mkdir -p "$METASTORE_DIR/conf" "$METASTORE_DIR/warehouse"
  cat >"$METASTORE_DIR/conf/hive-site.xml" <<EOF
<?xml version="1.0"?>
<!-- Written by setup_cluster.sh metastore start; rewritten at every start. -->
<configuration>
  <property><name>javax.jdo.option.ConnectionURL</name>
    <value>jdbc:derby:;databaseName=$METASTORE_DIR/metastore_db;create=true</value></property>
  <property><name>javax.jdo.option.ConnectionDriverName</name>
    <value>org.apache.derby.jdbc.EmbeddedDriver</value></property>
  <property><name>datanucleus.schema.autoCreateAll</name><value>true</value></property>
  <property><name>hive.metastore.schema.verification</name><value>false</value></property>
  <property><name>hive.async.log.enabled</name><value>false</value></property>
  <property><name>hive.metastore.warehouse.dir</name><value>file:$METASTORE_DIR/warehouse</value></property>
</configuration>
EOF
}

metastore_start() {
  [ $# -eq 0 ] || die "metastore start takes no options (RETAIL_LAKE_METASTORE_HOST, _PORT and _DIR set where and how it runs)"
  [ -x "$VENV/bin/python" ] || die "no virtual environment at $VENV: run './setup_cluster.sh install' first"
  if metastore_alive; then
    log "metastore already running (pid $(cat "$METASTORE_DIR/metastore.pid")) at $(metastore_uri)"
    return 0
  fi
  check_java
  if port_open "$METASTORE_HOST" "$METASTORE_PORT"; then
    die "$METASTORE_HOST:$METASTORE_PORT is in use by another process (set RETAIL_LAKE_METASTORE_PORT)"
  fi
  local jar sh java_bin
  jar="$(jvm_jar)"
  sh="$(spark_home)"
  java_bin="${JAVA_HOME:+$JAVA_HOME/bin/}java"
  metastore_hive_site
  rm -f "$METASTORE_DIR/metastore.pid"
  # A session of its own (stop signals all of it); Derby writes its log in METASTORE_DIR.
  (
    cd "$METASTORE_DIR"
    PIDFILE="$METASTORE_DIR/metastore.pid" setsid bash -c 'echo $$ >"$PIDFILE"; exec "$0" "$@"' \
      "$java_bin" -Xmx512m -Dderby.system.home="$METASTORE_DIR" -Duser.timezone=UTC \
      -cp "$METASTORE_DIR/conf:$sh/jars/*:$jar" \
      retail_lake.LoopbackMetastore "$METASTORE_HOST" "$METASTORE_PORT" \
      >"$METASTORE_DIR/metastore.log" 2>&1 </dev/null &
  )
  local i pid
  for i in $(seq 1 50); do [ -s "$METASTORE_DIR/metastore.pid" ] && break; sleep 0.1; done
  [ -s "$METASTORE_DIR/metastore.pid" ] || die "the metastore did not start; log: $METASTORE_DIR/metastore.log"
  pid="$(cat "$METASTORE_DIR/metastore.pid")"
  for i in $(seq 1 "$METASTORE_START_TIMEOUT"); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$METASTORE_DIR/metastore.log" >&2
      rm -f "$METASTORE_DIR/metastore.pid"
      die "the metastore exited during its start (log above: $METASTORE_DIR/metastore.log)"
    fi
    if grep -q "^metastore listening on" "$METASTORE_DIR/metastore.log" \
      && port_open "$METASTORE_HOST" "$METASTORE_PORT"; then
      log "metastore up at $(metastore_uri) (Derby database $METASTORE_DIR/metastore_db; log $METASTORE_DIR/metastore.log)"
      return 0
    fi
    sleep 1
  done
  tail -n 30 "$METASTORE_DIR/metastore.log" >&2
  stop_session "$METASTORE_DIR/metastore.pid" >/dev/null 2>&1 || true
  die "the metastore did not open $METASTORE_HOST:$METASTORE_PORT within ${METASTORE_START_TIMEOUT}s; stopped it"
}

metastore_stop() {
  if [ ! -f "$METASTORE_DIR/metastore.pid" ]; then
    log "no metastore started from $METASTORE_DIR"
    return 0
  fi
  if stop_session "$METASTORE_DIR/metastore.pid"; then
    log "metastore stopped (its database stays in $METASTORE_DIR/metastore_db)"
  else
    log "metastore was not running (stale pid file removed)"
  fi
}

metastore_status() {
  if metastore_alive; then
    echo "metastore: running (pid $(cat "$METASTORE_DIR/metastore.pid")) at $(metastore_uri)"
    echo "  Derby database: $METASTORE_DIR/metastore_db   log: $METASTORE_DIR/metastore.log"
    echo "  sessions:       --set spark.metastore_uri=$(metastore_uri) (the cluster profile's default is thrift://127.0.0.1:9083)"
  elif [ -f "$METASTORE_DIR/metastore.pid" ]; then
    echo "metastore: not running (stale pid file $METASTORE_DIR/metastore.pid; log $METASTORE_DIR/metastore.log)"
    return 1
  else
    echo "metastore: not running (none started from $METASTORE_DIR)"
    return 1
  fi
}

metastore() {
  local sub="${1:-}"
  [ $# -gt 0 ] && shift
  case "$sub" in
    start) metastore_start "$@" ;;
    stop) metastore_stop ;;
    status) metastore_status ;;
    *) die "metastore: use start | stop | status" ;;
  esac
}

# ---------------------------------------------------------------------------- main
cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  install) check_java; install_stack ;;
  install-airflow) install_airflow ;;
  start) cluster_start "$@" ;;
  stop) cluster_stop ;;
  status) cluster_status ;;
  submit-line) cluster_submit_line ;;
  sql-server) sql_server "$@" ;;
  metastore) metastore "$@" ;;
  run)
    [ -x "$VENV/bin/retail-lake" ] || die "no retail-lake in $VENV: run './setup_cluster.sh install' first"
    # The checkout's code runs even when the venv's editable install points at another checkout.
    PYTHONPATH="$HERE/lib${PYTHONPATH:+:$PYTHONPATH}" exec "$VENV/bin/retail-lake" "$@" ;;
  test)
    [ -x "$VENV/bin/pytest" ] || die "no pytest in $VENV: run './setup_cluster.sh install' first"
    cd "$HERE" && PYTHONPATH="$HERE/lib${PYTHONPATH:+:$PYTHONPATH}" exec "$VENV/bin/pytest" "$@" ;;
  *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; [ -z "$cmd" ] && exit 2 || die "unknown command '$cmd'" ;;
esac
