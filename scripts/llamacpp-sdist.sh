# Sourced by the comparison scripts: llamacpp_src WORK prints the path of llama.cpp's tree
# vendored in the llama-cpp-python 0.3.36 sdist (llama.cpp 0c1e570), fetching and unpacking
# the sdist into WORK the first time (with cmake and ninja from pip to build it).
llamacpp_src() {
    local work=$1
    local src="$work/llama_cpp_python-0.3.36/vendor/llama.cpp"
    if [ ! -d "$src" ]; then
        mkdir -p "$work"
        python3 -m pip install -q cmake ninja >&2
        python3 - "$work" <<'PY'
import json, sys, urllib.parse, urllib.request
meta = "https://pypi.org/pypi/llama-cpp-python/0.3.36/json"
for u in json.load(urllib.request.urlopen(meta))["urls"]:
    if u["packagetype"] == "sdist":
        urllib.request.urlretrieve(urllib.parse.urljoin(meta, u["url"]), sys.argv[1] + "/" + u["filename"])
PY
        tar xzf "$work"/llama_cpp_python-0.3.36.tar.gz -C "$work"
    fi
    echo "$src"
}
