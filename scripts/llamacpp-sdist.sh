# Sourced by the comparison scripts: llamacpp_src WORK prints the path of llama.cpp's tree
# vendored in the llama-cpp-python 0.3.36 sdist (llama.cpp 0c1e570), fetching and unpacking
# the sdist into WORK the first time (with cmake and ninja from pip to build it).
llamacpp_src() {
    local work=$1
    local src="$work/llama_cpp_python-0.3.36/vendor/llama.cpp"
    if [ ! -d "$src" ]; then
        mkdir -p "$work"
        python3 -m pip install -q cmake ninja >&2
        # The sdist only (--no-binary for this package alone: its build tools stay wheels).
        python3 -m pip download -q --no-deps --no-binary llama-cpp-python \
            llama-cpp-python==0.3.36 -d "$work" >&2
        tar xzf "$work"/llama_cpp_python-0.3.36.tar.gz -C "$work"
    fi
    echo "$src"
}
