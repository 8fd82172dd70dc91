# Compute kernels: sources for the engine build, the kernel test harnesses and the kernel
# benchmark. Included by wasm/Makefile (make -C wasm kernel-tests / bench-kernels).
#
#   kernel-tests   ../build/kernels/: harness_asan (native, SIMDe, ASan+UBSan),
#                  harness_asan_relaxed (same, relaxed-SIMD FMA), harness.js (emcc, wasm
#                  SIMD128, run by Node), harness_relaxed.js (clang-16, relaxed SIMD) when
#                  clang-16 is present
#   bench-kernels  builds bench_kernels.js (+ relaxed) and runs pysparse/bench/kernels.py:
#                  table on stdout, JSON and PNG under ../build/bench/
#   bench-kernels-ab   the working tree's SpMM/GEMM kernels against BASELINE's (see below)
#   bench-dwconv-ab    the working tree's depthwise and KxK convolution kernels against
#                  BASELINE's (see below); bench-dwconv-ab-chromium runs it in Chromium too
#   bench-kernels-native  the simd128 wasm build against a native x86 build of the same
#                  sources (SIMDe, 128-bit vectors), alternating in one benchmark run
#   layer-probe    one SpMM or fully connected layer timed in place (PROBE="...", see below)

KERNEL_SRCS := src/kernels/spmm.c src/kernels/spmm_pack.c src/kernels/gemm.c \
               src/kernels/gemv.c src/kernels/conv.c src/kernels/dwconv.c \
               src/kernels/variant.c
KERNEL_HEADERS := src/kernels.h src/simd.h src/kernels/tile.h

KROOT := $(abspath ..)
KBUILD := $(KROOT)/build/kernels
EMCC ?= emcc
CLANG16 ?= /usr/lib/llvm-16/bin/clang
CC_NATIVE ?= clang-14
PYTHON ?= $(KROOT)/.venv/bin/python
export NODE_PATH ?= /usr/share/nodejs

KERNEL_CFLAGS := -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -Isrc \
                 -ffp-contract=off
KERNEL_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
# Synchronous instantiation: the glue then reads the .wasm from disk, never through fetch()
# (which newer Node versions always have, and which cannot read a file path).
KERNEL_EM_LINK := -sENVIRONMENT=node -sNODERAWFS=1 -sALLOW_MEMORY_GROWTH=1 \
                  -sEXIT_RUNTIME=1 -sINITIAL_MEMORY=67108864 -sWASM_ASYNC_COMPILATION=0
# clang-16 compiling for Emscripten's target with its sysroot (LLVM 14's emcc lacks the
# relaxed-SIMD builtins); binaryen 108 cannot parse relaxed opcodes, so link at -O0 with
# BigInt integration on (no i64 legalisation pass by binaryen).
KERNEL_EM_SYS = $(filter --sysroot=% -D__EMSCRIPTEN% -DEMSCRIPTEN,$(shell $(EMCC) --cflags 2>/dev/null)) \
                -Xclang -iwithsysroot/include/compat
KERNEL_RELAXED_CFLAGS = --target=wasm32-unknown-emscripten $(KERNEL_EM_SYS) $(KERNEL_CFLAGS) \
                        -O3 -msimd128 -mrelaxed-simd -DSPNN_RELAXED_SIMD -DNDEBUG
HAVE_CLANG16 := $(shell test -x $(CLANG16) && echo 1)

KERNEL_DEPS := $(KERNEL_SRCS) $(KERNEL_HEADERS) kernels.mk

$(KBUILD)/harness_asan: tests/kernel_harness.c $(KERNEL_DEPS)
	@mkdir -p $(dir $@)
	$(CC_NATIVE) $(KERNEL_CFLAGS) -O1 -g $(KERNEL_SAN) tests/kernel_harness.c $(KERNEL_SRCS) -o $@ -lm
$(KBUILD)/harness_asan_relaxed: tests/kernel_harness.c $(KERNEL_DEPS)
	@mkdir -p $(dir $@)
	$(CC_NATIVE) $(KERNEL_CFLAGS) -O1 -g $(KERNEL_SAN) -DSPNN_RELAXED_SIMD tests/kernel_harness.c $(KERNEL_SRCS) -o $@ -lm
$(KBUILD)/harness.js: tests/kernel_harness.c $(KERNEL_DEPS)
	@mkdir -p $(dir $@)
	$(EMCC) $(KERNEL_CFLAGS) -O3 -msimd128 $(KERNEL_EM_LINK) tests/kernel_harness.c $(KERNEL_SRCS) -o $@

KERNEL_RELAXED_OBJS = $(patsubst %.c,$(KBUILD)/relaxed/%.o,$(KERNEL_SRCS))
$(KBUILD)/relaxed/%.o: %.c $(KERNEL_HEADERS)
	@mkdir -p $(dir $@)
	$(CLANG16) $(KERNEL_RELAXED_CFLAGS) -c $< -o $@
# The drivers (main) are compiled by emcc: clang-16 names main differently from what
# Emscripten 3.1.6's glue calls.
$(KBUILD)/driver/%.o: %.c $(KERNEL_HEADERS)
	@mkdir -p $(dir $@)
	$(EMCC) $(KERNEL_CFLAGS) -O3 -msimd128 -c $< -o $@
$(KBUILD)/harness_relaxed.js: $(KBUILD)/driver/tests/kernel_harness.o $(KERNEL_RELAXED_OBJS) kernels.mk
	EMCC_READ_METADATA=python $(EMCC) -O0 -msimd128 -mrelaxed-simd $(KERNEL_EM_LINK) -sWASM_BIGINT=1 $(filter %.o,$^) -o $@
$(KBUILD)/bench_kernels.js: bench/bench_kernels.c bench/peak_probe.c $(KERNEL_DEPS)
	@mkdir -p $(dir $@)
	$(EMCC) $(KERNEL_CFLAGS) -O3 -msimd128 $(KERNEL_EM_LINK) bench/bench_kernels.c bench/peak_probe.c $(KERNEL_SRCS) -o $@
$(KBUILD)/bench_kernels_relaxed.js: $(KBUILD)/driver/bench/bench_kernels.o $(KBUILD)/relaxed/bench/peak_probe.o $(KERNEL_RELAXED_OBJS) kernels.mk
	EMCC_READ_METADATA=python $(EMCC) -O0 -msimd128 -mrelaxed-simd $(KERNEL_EM_LINK) -sWASM_BIGINT=1 $(filter %.o,$^) -o $@

$(KBUILD)/layer_probe.js: bench/layer_probe.c $(KERNEL_DEPS)
	@mkdir -p $(dir $@)
	$(EMCC) $(KERNEL_CFLAGS) -O3 -msimd128 $(KERNEL_EM_LINK) bench/layer_probe.c $(KERNEL_SRCS) -o $@
$(KBUILD)/layer_probe_relaxed.js: $(KBUILD)/driver/bench/layer_probe.o $(KERNEL_RELAXED_OBJS) kernels.mk
	EMCC_READ_METADATA=python $(EMCC) -O0 -msimd128 -mrelaxed-simd $(KERNEL_EM_LINK) -sWASM_BIGINT=1 $(filter %.o,$^) -o $@

KERNEL_TEST_BINS := $(KBUILD)/harness_asan $(KBUILD)/harness_asan_relaxed $(KBUILD)/harness.js
KERNEL_BENCH_BINS := $(KBUILD)/bench_kernels.js
ifeq ($(HAVE_CLANG16),1)
KERNEL_TEST_BINS += $(KBUILD)/harness_relaxed.js
KERNEL_BENCH_BINS += $(KBUILD)/bench_kernels_relaxed.js
endif

kernel-tests: $(KERNEL_TEST_BINS)

BENCH_REPEATS ?= 9
bench-kernels: $(KERNEL_BENCH_BINS)
	cd $(KROOT) && $(PYTHON) -m pysparse.bench.kernels --repeats $(BENCH_REPEATS) \
	  $(addprefix --binary ,$(KERNEL_BENCH_BINS))

# bench-kernels-ab BASELINE=<git revision>: the kernels of the working tree against those of
# BASELINE (default HEAD), both in one binary and timed case by case (simd128, and relaxed
# SIMD where clang-16 is present).
BASELINE ?= HEAD
KBASE := $(KBUILD)/baseline
KBASE_SRCS := spmm.c spmm_pack.c gemm.c
KBASE_RENAME := $(foreach f,spmm_packed_bytes spmm_pack spmm_pack_columns spmm_run \
                  spmm_run_residual spmm_run_split spmm_splits spmm_split_pays f32_add_parts \
                  gemm_packed_bytes gemm_pack gemm_run gemm_run_residual f32_spmm_1row \
                  f32_spmm_2rows f32_spmm_4rows f32_spmm_32x1 f32_spmm_16x2 \
                  f32_spmm_8x4,-Dspnn_$(f)=base_spnn_$(f))
KBASE_BINS := $(KBUILD)/bench_kernels_ab.js
ifeq ($(HAVE_CLANG16),1)
KBASE_BINS += $(KBUILD)/bench_kernels_ab_relaxed.js
KBASE_RELAXED_DEPS := $(KERNEL_RELAXED_OBJS) $(KBUILD)/relaxed/bench/peak_probe.o
endif
# BASELINE's wasm/src under $(KBASE)
KBASE_CHECKOUT = rm -rf $(KBASE) && mkdir -p $(KBASE) && \
                 git -C $(KROOT) archive $(BASELINE) wasm/src | tar -x -C $(KBASE)
bench-kernels-ab: $(KBASE_RELAXED_DEPS)
	$(KBASE_CHECKOUT)
	cd $(KBASE)/wasm && $(EMCC) $(KERNEL_CFLAGS) -O3 -msimd128 $(KBASE_RENAME) -c \
	  $(addprefix src/kernels/,$(KBASE_SRCS))
	$(EMCC) $(KERNEL_CFLAGS) -O3 -msimd128 -DSPNN_BENCH_BASELINE $(KERNEL_EM_LINK) \
	  bench/bench_kernels.c bench/peak_probe.c $(KERNEL_SRCS) \
	  $(addprefix $(KBASE)/wasm/,$(KBASE_SRCS:.c=.o)) -o $(KBUILD)/bench_kernels_ab.js
ifeq ($(HAVE_CLANG16),1)
	mkdir -p $(KBASE)/relaxed
	cd $(KBASE)/wasm && for f in $(KBASE_SRCS:.c=); do \
	  $(CLANG16) $(KERNEL_RELAXED_CFLAGS) $(KBASE_RENAME) -c src/kernels/$$f.c \
	    -o $(KBASE)/relaxed/$$f.o || exit 1; done
	$(EMCC) $(KERNEL_CFLAGS) -O3 -msimd128 -DSPNN_BENCH_BASELINE -c bench/bench_kernels.c \
	  -o $(KBASE)/relaxed/driver.o
	EMCC_READ_METADATA=python $(EMCC) -O0 -msimd128 -mrelaxed-simd $(KERNEL_EM_LINK) \
	  -sWASM_BIGINT=1 $(KBASE)/relaxed/driver.o $(KBASE_RELAXED_DEPS) \
	  $(addprefix $(KBASE)/relaxed/,$(KBASE_SRCS:.c=.o)) -o $(KBUILD)/bench_kernels_ab_relaxed.js
endif
	cd $(KROOT) && $(PYTHON) -m pysparse.bench.kernels --repeats $(BENCH_REPEATS) \
	  $(addprefix --binary ,$(KBASE_BINS)) --out $(KROOT)/build/bench/ab

# bench-dwconv-ab BASELINE=<git revision>: the depthwise kernels of the working tree against
# BASELINE's, alternating round by round in one binary on the plane sizes of MobileNet-style
# models (simd128, then relaxed SIMD where clang-16 is present; both take the working tree's
# packed weights). DW_ROUNDS rounds per shape.
KBASE_DW_RENAME := $(foreach f,dwconv_packed_bytes dwconv_pack dwconv_select f32_dwconv_generic \
                     f32_dwconv_3x3s1 f32_dwconv_3x3s2 f32_dwconv_5x5s1 f32_dwconv_5x5s2 \
                     conv_packed_bytes conv_pack conv_scratch_bytes conv_run gemm_packed_bytes \
                     gemm_pack gemm_run gemm_run_residual f32_dwconv_rows f32_dwconv_rows_at \
                     dwconv_input_rows dwconv_reads_split f32_dwconv_split_rows_at \
                     f32_dwconv4_3x3s1 f32_dwconv4_3x3s2,-Dspnn_$(f)=base_spnn_$(f))
KBASE_DW_SRCS := dwconv.c conv.c gemm.c
# the Node the kernel benchmark runs on (pysparse/bench/kernels.py decides)
BENCH_NODE = $(shell cd $(KROOT) && $(PYTHON) -m pysparse.bench.kernels --which-node)
DW_ROUNDS ?= 41
ifeq ($(HAVE_CLANG16),1)
KBASE_DW_RELAXED_DEPS := $(addprefix $(KBUILD)/relaxed/src/kernels/,$(KBASE_DW_SRCS:.c=.o))
endif
bench-dwconv-ab: $(KBASE_DW_RELAXED_DEPS)
	$(KBASE_CHECKOUT)
	cd $(KBASE)/wasm && for f in $(KBASE_DW_SRCS:.c=); do \
	  $(EMCC) $(KERNEL_CFLAGS) -O3 -msimd128 $(KBASE_DW_RENAME) -c src/kernels/$$f.c \
	    -o $${f}_base.o || exit 1; done
	$(EMCC) $(KERNEL_CFLAGS) -O3 -msimd128 -DSPNN_BENCH_BASELINE $(KERNEL_EM_LINK) \
	  tests/dwconv_bench.c $(addprefix src/kernels/,$(KBASE_DW_SRCS)) \
	  $(addprefix $(KBASE)/wasm/,$(KBASE_DW_SRCS:.c=_base.o)) -o $(KBUILD)/dwconv_bench_ab.js
	@echo "simd128:"
	$(BENCH_NODE) $(KBUILD)/dwconv_bench_ab.js $(DW_ROUNDS)
ifeq ($(HAVE_CLANG16),1)
	mkdir -p $(KBASE)/relaxed
	cd $(KBASE)/wasm && for f in $(KBASE_DW_SRCS:.c=); do \
	  $(CLANG16) $(KERNEL_RELAXED_CFLAGS) $(KBASE_DW_RENAME) -c src/kernels/$$f.c \
	    -o $(KBASE)/relaxed/$${f}_dw.o || exit 1; done
	$(EMCC) $(KERNEL_CFLAGS) -O3 -msimd128 -DSPNN_BENCH_BASELINE -c tests/dwconv_bench.c \
	  -o $(KBASE)/relaxed/dwconv_driver.o
	EMCC_READ_METADATA=python $(EMCC) -O0 -msimd128 -mrelaxed-simd $(KERNEL_EM_LINK) \
	  -sWASM_BIGINT=1 $(KBASE)/relaxed/dwconv_driver.o $(KBASE_DW_RELAXED_DEPS) \
	  $(addprefix $(KBASE)/relaxed/,$(KBASE_DW_SRCS:.c=_dw.o)) -o $(KBUILD)/dwconv_bench_ab_relaxed.js
	@echo "relaxed SIMD:"
	$(BENCH_NODE) $(KBUILD)/dwconv_bench_ab_relaxed.js $(DW_ROUNDS)
endif

# bench-dwconv-ab-chromium: after bench-dwconv-ab, its relaxed-SIMD A/B linked for the web and
# run in headless Chromium (pysparse/bench/in_chromium.py): what the browser's V8 makes of the
# same kernels, to set beside the Node figures.
ifeq ($(HAVE_CLANG16),1)
bench-dwconv-ab-chromium: bench-dwconv-ab
	mkdir -p $(KBUILD)/web
	EMCC_READ_METADATA=python $(EMCC) -O0 -msimd128 -mrelaxed-simd -sENVIRONMENT=web \
	  -sALLOW_MEMORY_GROWTH=1 -sINITIAL_MEMORY=67108864 -sWASM_BIGINT=1 \
	  $(KBASE)/relaxed/dwconv_driver.o $(KBASE_DW_RELAXED_DEPS) \
	  $(addprefix $(KBASE)/relaxed/,$(KBASE_DW_SRCS:.c=_dw.o)) \
	  -o $(KBUILD)/web/dwconv_bench_ab_relaxed.js
	@echo "relaxed SIMD, Chromium:"
	cd $(KROOT) && $(PYTHON) -m pysparse.bench.in_chromium \
	  $(KBUILD)/web/dwconv_bench_ab_relaxed.js $(DW_ROUNDS)
endif

# layer-probe PROBE="spmm 56 144 24 equal": one layer timed in place (bench/layer_probe.c),
# with relaxed SIMD where clang-16 is present, else SIMD128.
PROBE ?= spmm 56 144 24
ifeq ($(HAVE_CLANG16),1)
LAYER_PROBE := $(KBUILD)/layer_probe_relaxed.js
else
LAYER_PROBE := $(KBUILD)/layer_probe.js
endif
layer-probe: $(LAYER_PROBE)
	$(BENCH_NODE) $(LAYER_PROBE) $(PROBE)

# bench-kernels-native: the same kernel sources compiled for this CPU (SIMDe maps each wasm
# SIMD128 operation onto SSE/AVX with 128-bit vectors; no auto-vectorising, so no wider
# vectors than the wasm code has), timed in turn with the simd128 wasm build. The gap
# between the two is what compiling to wasm and V8's code generation cost these kernels.
# On x86-64, AVX encodings (three operands), as V8 emits for wasm SIMD on this hardware.
KERNEL_NATIVE_ARCH := $(if $(filter x86_64,$(shell uname -m)),-mavx)
$(KBUILD)/bench_kernels_native: bench/bench_kernels.c bench/peak_probe.c $(KERNEL_DEPS)
	@mkdir -p $(dir $@)
	$(CC_NATIVE) $(KERNEL_CFLAGS) -O3 -DNDEBUG $(KERNEL_NATIVE_ARCH) -fno-vectorize -fno-slp-vectorize \
	  bench/bench_kernels.c bench/peak_probe.c $(KERNEL_SRCS) -o $@ -lm
bench-kernels-native: $(KBUILD)/bench_kernels.js $(KBUILD)/bench_kernels_native
	cd $(KROOT) && $(PYTHON) -m pysparse.bench.kernels --repeats $(BENCH_REPEATS) \
	  $(addprefix --binary ,$^) --out $(KROOT)/build/bench/native

.PHONY: kernel-tests bench-kernels bench-kernels-ab bench-dwconv-ab bench-dwconv-ab-chromium \
        bench-kernels-native layer-probe
