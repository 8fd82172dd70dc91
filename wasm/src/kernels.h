/* The engine's compute kernels: f32, CHW activations, batch 1.
 *
 * Layering (as in XNNPACK): a *pack* function runs once at load and turns a layer's
 * weights into the kernel's layout, with everything that depends only on shapes
 * precomputed; a *kernel* then runs that layer with no allocation and no checks. Each
 * kernel takes the range of work it should do (pixels or channels), so threads split a
 * layer by calling the same kernel on disjoint ranges; ranges may be any size but
 * multiples of 48 pixels keep every thread on full-width tiles.
 *
 * Shapes: an activation [C, H, W] is C planes of P = H*W floats (channel stride P).
 * Clamping: every kernel clamps its outputs to [out_min, out_max] (use -INFINITY and
 * INFINITY for none; ReLU is [0, inf), ReLU6 [0, 6]). NaN passes through unchanged.
 * Sums are accumulated in float32; the order differs from a naive loop.
 *
 * Packed buffers are caller-allocated (sizes from the *_packed_bytes functions) and must
 * be 16-byte aligned. Inputs and outputs of one call must not overlap.
 */
#ifndef SPNN_KERNELS_H
#define SPNN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* "simd128" or "relaxed-simd": the variant these kernels were compiled as. */
const char* spnn_kernels_variant(void);

/* ---- Sparse 1x1 convolution (SpMM) ------------------------------------------------
 * out[n][p] = clamp(bias[n] + sum_k W[n][k] * in[k][p]) for p in [pixel_begin, pixel_end).
 * W is [rows x cols] in the .spnn sparse layout (docs/format.md), already decoded:
 *   block      rows per block, 1, 2 or 4;
 *   counts     stored columns per block, num_blocks = rows/block + rows%block entries
 *              (the rows%block remainder rows come last, one row per block);
 *   columns    the stored column indices, block by block, increasing inside a block
 *              (sum(counts) entries: the running sums of the format's steps);
 *   values     block by block, column by column, the block's rows inside a column;
 *   bias       rows floats, or NULL for zeros.
 * `pixels` is the layer's P: the channel stride of both input and output.
 */

/* A run of blocks of one size, as the kernels walk them. The input pointer moves by
 * precomputed byte increments, one per stored column; the last increment of a segment
 * returns it to the segment's first stored column, so after a block's last column the
 * pointer is ready for the next block (the kernel walks the blocks within cached chunks of
 * pixels: see kernels/spmm.c). */
typedef struct spnn_spmm_segment {
  uint32_t block;            /* rows per block: 1, 2 or 4 */
  uint32_t num_blocks;
  uint32_t first_row;        /* output row of the segment's first block */
  int32_t input_offset;      /* bytes from the input's pixel 0 to the first stored column */
  uint32_t mode;             /* SPMM_FROM_OUTPUT and/or SPMM_PARTIAL (column slices), or 0 */
  const uint32_t* counts;    /* [num_blocks] stored columns per block */
  const int32_t* increments; /* [sum(counts)] byte increments of the input pointer */
  const float* values;       /* per block: bias[block], then block values per column */
} spnn_spmm_segment;

/* Column slices. A weight with more than SPMM_SLICE_MIN_COLS input channels is packed as
 * slices of about SPMM_SLICE_COLS columns each, walked one after the other over a chunk of
 * pixels, so the input rows one slice reads stay near the core while every output row takes
 * its share of them (a 576-channel input of a 48-pixel tile is 110 KiB, more than L1
 * holds). A slice's sums go to the output unclamped (SPMM_PARTIAL) and the next slice
 * starts from them (SPMM_FROM_OUTPUT); columns are summed in the same order, so the bits
 * are those of one pass. Fewer channels are not cut: their input fits, and each slice
 * costs a load and a store of every output. */
#ifndef SPMM_SLICE_COLS
#define SPMM_SLICE_COLS 128
#endif
#ifndef SPMM_SLICE_MIN_COLS
#define SPMM_SLICE_MIN_COLS 256
#endif
#define SPMM_MAX_SLICES 8
#define SPMM_FROM_OUTPUT 1u /* the sums start from the output, not the bias */
#define SPMM_PARTIAL 2u     /* store the sums as they are: no residual, no clamp */
#define SPMM_SPLIT 4u       /* store rows split into even and odd columns (spnn_spmm_run_split) */

typedef struct spnn_spmm_weights {
  uint32_t rows, cols, pixels;
  uint32_t slices;       /* column slices, 1 to SPMM_MAX_SLICES */
  uint32_t slice_cols;   /* columns of the widest slice */
  uint32_t num_segments; /* per slice 1 or 2 (blocks of `block` rows, then the remainder rows) */
  spnn_spmm_segment segments[2 * SPMM_MAX_SLICES];
} spnn_spmm_weights;

/* Bytes of the buffer spnn_spmm_pack fills. num_columns = sum(counts). */
size_t spnn_spmm_packed_bytes(uint32_t rows, uint32_t cols, uint32_t block, uint32_t num_columns);

/* Packs into `buffer`; `out` then points into it. Returns 0, or -1 on an inconsistent
 * description (bad block, columns not increasing or not below cols, byte increments
 * that would not fit in int32); the loader checks the format first, so -1 is a bug guard. */
int spnn_spmm_pack(uint32_t rows, uint32_t cols, uint32_t block, const uint32_t* counts,
                   const uint32_t* columns, const float* values, const float* bias,
                   uint32_t pixels, void* buffer, spnn_spmm_weights* out);
/* The same for the input channels [c_begin, c_end) only (the layer's input is still passed
 * whole when it runs); spnn_spmm_packed_bytes with `cols` = c_end - c_begin and the stored
 * columns in that range gives the buffer's size. */
int spnn_spmm_pack_columns(uint32_t rows, uint32_t cols, uint32_t block, const uint32_t* counts,
                           const uint32_t* columns, const float* values, const float* bias,
                           uint32_t pixels, uint32_t c_begin, uint32_t c_end, void* buffer,
                           spnn_spmm_weights* out);

/* Runs the whole layer for pixels [pixel_begin, pixel_end). */
void spnn_spmm_run(const spnn_spmm_weights* w, size_t pixel_begin, size_t pixel_end,
                   const float* input, float* output, float out_min, float out_max);
/* The same with a residual added before the clamp: output = clamp(W . input + residual),
 * `residual` laid out as `output` (it may be `output` itself where w->slices == 1: each
 * element is read before it is written, and no pixel is computed twice; with slices the
 * output holds partial sums first). The sum and the residual are added last, as a separate
 * ADD op would, so the bits are those of the two ops. */
void spnn_spmm_run_residual(const spnn_spmm_weights* w, size_t pixel_begin, size_t pixel_end,
                            const float* input, float* output, const float* residual,
                            float out_min, float out_max);

/* Rows split by column parity: a plane of rows `row_width` (W) wide stored with each row's
 * even columns first, then its odd ones (row y, column x at y W + x / 2, or y W + W / 2 +
 * x / 2 for odd x). A stride-2 depthwise layer reads such rows in place
 * (spnn_f32_dwconv_split_rows_at), with no copy of its input into phases.
 * spnn_spmm_splits: whether `w` can write them (rows a multiple of 8 wide, no column slices,
 * pixel tiles of whole groups of eight). spnn_spmm_run_split: spnn_spmm_run writing them,
 * for pixels [pixel_begin, pixel_end) that are whole rows; the sums are spnn_spmm_run's,
 * bit for bit. */
int spnn_spmm_splits(const spnn_spmm_weights* w, size_t row_width);
/* Whether writing split rows pays for `w`: its tiles stop at every row end, so they run
 * emptier than tiles across rows (a tile across two rows would store its parts at places
 * computed per group of pixels, which cost more in Chromium than the copy they save); under
 * 3/4 full on average they cost more than the depthwise layer's copy. A 56-pixel row, which
 * 48-pixel tiles would cut 48 + 8, is cut 32 + 24 instead, and that pays. */
int spnn_spmm_split_pays(const spnn_spmm_weights* w, size_t row_width);
void spnn_spmm_run_split(const spnn_spmm_weights* w, size_t pixel_begin, size_t pixel_end,
                         const float* input, float* output, size_t row_width, float out_min,
                         float out_max);

/* out = clamp(sum of `parts` partial sums (+ residual)) for pixels [begin, end) of every
 * row: partial sum j of row r at sums[(j rows + r) pixels], the parts added in order, then
 * the residual (laid out as `out`, or NULL; it may be `out` itself). */
void spnn_f32_add_parts(size_t parts, const float* sums, size_t rows, size_t pixels, size_t begin,
                        size_t end, const float* residual, float* out, float out_min, float out_max);

/* The microkernels spnn_spmm_run calls, one per block size (1, 2, 4 rows): pixels of one
 * segment. Their tiles hold twelve f32x4 accumulators where the multiply-add is fused
 * (relaxed SIMD: 48x1, 24x2 and 12x4 pixels x rows) and eight otherwise (32x1, 16x2, 8x4:
 * V8 loads each pixel vector into one register just before its multiply-add, so twelve
 * accumulators, the splatted weight and that register fit x86's sixteen; a separate
 * multiply and add need one more for the product, and V8 then spills accumulators).
 * `input` is the layer input already moved by the segment's input_offset, `output` points
 * at the segment's first output row, `pixels` is the channel stride of the output, `mode`
 * the segment's (SPMM_FROM_OUTPUT, SPMM_PARTIAL). */
#ifdef SPNN_RELAXED_SIMD
#define SPMM_DEFAULT_MR1 48
#define SPMM_DEFAULT_MR2 24
#define SPMM_DEFAULT_MR4 12
#else
#define SPMM_DEFAULT_MR1 32
#define SPMM_DEFAULT_MR2 16
#define SPMM_DEFAULT_MR4 8
#endif
#ifndef SPMM_MR1
#define SPMM_MR1 SPMM_DEFAULT_MR1
#endif
#ifndef SPMM_MR2
#define SPMM_MR2 SPMM_DEFAULT_MR2
#endif
#ifndef SPMM_MR4
#define SPMM_MR4 SPMM_DEFAULT_MR4
#endif
#define SPNN_STR_(x) #x
#define SPNN_STR(x) SPNN_STR_(x)
/* The kernels' names in profiles: "spmm_<pixels>x<rows>". */
#define SPMM_NAME(MR, ROWS) "spmm_" SPNN_STR(MR) "x" #ROWS
typedef void (*spnn_spmm_ukernel)(size_t pixel_begin, size_t pixel_end, size_t num_blocks,
                                  const float* input, const float* values,
                                  const int32_t* increments, const uint32_t* counts,
                                  float* output, const float* residual, size_t pixels,
                                  float out_min, float out_max, uint32_t mode);
void spnn_f32_spmm_1row(size_t pixel_begin, size_t pixel_end, size_t num_blocks,
                        const float* input, const float* values, const int32_t* increments,
                        const uint32_t* counts, float* output, const float* residual,
                        size_t pixels, float out_min, float out_max, uint32_t mode);
void spnn_f32_spmm_2rows(size_t pixel_begin, size_t pixel_end, size_t num_blocks,
                         const float* input, const float* values, const int32_t* increments,
                         const uint32_t* counts, float* output, const float* residual,
                         size_t pixels, float out_min, float out_max, uint32_t mode);
void spnn_f32_spmm_4rows(size_t pixel_begin, size_t pixel_end, size_t num_blocks,
                         const float* input, const float* values, const int32_t* increments,
                         const uint32_t* counts, float* output, const float* residual,
                         size_t pixels, float out_min, float out_max, uint32_t mode);

/* ---- Dense 1x1 convolution in CHW (GEMM) ------------------------------------------
 * out[n][p] = clamp(bias[n] + sum_k W[n][k] * in[k][p]), W row-major [rows x cols]
 * (the CONV2D weight [Cout, Cin, 1, 1]), in [cols x pixels], out [rows x pixels]. */
size_t spnn_gemm_packed_bytes(uint32_t rows, uint32_t cols);
/* weights: row-major f32 [rows x cols]; bias: rows floats or NULL. */
void spnn_gemm_pack(uint32_t rows, uint32_t cols, const float* weights, const float* bias,
                    void* buffer);
/* Output rows [0, rows), pixels [pixel_begin, pixel_end); `input_stride` and
 * `output_stride` are the channel strides in floats (both P for a plain 1x1 conv). */
void spnn_gemm_run(uint32_t rows, uint32_t cols, const void* packed, size_t pixel_begin,
                   size_t pixel_end, const float* input, size_t input_stride, float* output,
                   size_t output_stride, float out_min, float out_max);
/* The same with a residual added before the clamp, laid out as `output` and never `output`
 * itself (the last tile of a range may recompute pixels): see spnn_spmm_run_residual. */
void spnn_gemm_run_residual(uint32_t rows, uint32_t cols, const void* packed,
                            size_t pixel_begin, size_t pixel_end, const float* input,
                            size_t input_stride, float* output, const float* residual,
                            size_t output_stride, float out_min, float out_max);

/* ---- Matrix-vector product (FULLY_CONNECTED, one row of x at a time) --------------
 * y[m] = clamp(bias[m] + sum_k W[m][k] * x[k]) for m in [row_begin, row_end). W is the
 * row-major [rows x cols] weight as stored (no packing); bias may be NULL. */
void spnn_f32_gemv(size_t row_begin, size_t row_end, size_t cols, const float* weights,
                   const float* bias, const float* x, float* y, float out_min,
                   float out_max);

/* ---- Dense KxK convolution in CHW (any size, stride, dilation, padding, groups) ----
 * Done as im2col of the requested pixel range into a caller-provided scratch buffer,
 * then the GEMM above per group. */
typedef struct spnn_conv_shape {
  uint32_t in_channels, in_h, in_w;
  uint32_t out_channels, out_h, out_w;
  uint32_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w;
  uint32_t pad_top, pad_left; /* bottom/right padding is implied by out_h/out_w */
  uint32_t groups;
} spnn_conv_shape;

/* weights: [out_channels, in_channels/groups, kernel_h, kernel_w]; bias or NULL. */
size_t spnn_conv_packed_bytes(const spnn_conv_shape* s);
void spnn_conv_pack(const spnn_conv_shape* s, const float* weights, const float* bias,
                    void* buffer);
/* Scratch bytes for one call (shared by threads working on disjoint pixel ranges of the
 * same layer: each writes only its own pixels' columns):
 * 4 * (in_channels/groups) * kernel_h * kernel_w * out_h * out_w. */
size_t spnn_conv_scratch_bytes(const spnn_conv_shape* s);
/* Output pixels [pixel_begin, pixel_end) of out_h*out_w, all output channels. */
void spnn_conv_run(const spnn_conv_shape* s, const void* packed, size_t pixel_begin,
                   size_t pixel_end, const float* input, float* scratch, float* output,
                   float out_min, float out_max);

/* ---- Depthwise convolution in CHW ---------------------------------------------------
 * Channel c of the output is input plane c convolved with its own kernel (groups ==
 * in_channels == out_channels). Packed: per channel, bias then kernel_h*kernel_w taps. */
typedef struct spnn_dwconv_shape {
  uint32_t channels, in_h, in_w, out_h, out_w;
  uint32_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w;
  uint32_t pad_top, pad_left; /* bottom/right padding is implied by out_h/out_w */
} spnn_dwconv_shape;

/* weights: [channels, 1, kernel_h, kernel_w]; bias or NULL. */
size_t spnn_dwconv_packed_bytes(const spnn_dwconv_shape* s);
void spnn_dwconv_pack(const spnn_dwconv_shape* s, const float* weights, const float* bias,
                      void* buffer);

/* A depthwise kernel over channels [c_begin, c_end) of a whole layer. */
typedef void spnn_dwconv_fn(const spnn_dwconv_shape* s, size_t c_begin, size_t c_end,
                            const float* input, const void* packed, float* output,
                            float out_min, float out_max);
typedef spnn_dwconv_fn* spnn_dwconv_ukernel;
/* Specialised: square kernel 3 or 5, equal strides 1 or 2, dilation 1. */
spnn_dwconv_fn spnn_f32_dwconv_3x3s1, spnn_f32_dwconv_3x3s2, spnn_f32_dwconv_5x5s1,
    spnn_f32_dwconv_5x5s2;
/* 3x3 on small planes, four channels at a time (see kernels/dwconv.c; spnn_dwconv_select
 * picks them for the shapes they take). */
spnn_dwconv_fn spnn_f32_dwconv4_3x3s1, spnn_f32_dwconv4_3x3s2;
/* Any kernel size, stride and dilation. */
spnn_dwconv_fn spnn_f32_dwconv_generic;
/* The fastest of the above that handles `s` (chosen once, at load). */
spnn_dwconv_ukernel spnn_dwconv_select(const spnn_dwconv_shape* s);
/* Output rows [row_begin, row_end) of channels [c_begin, c_end), any shape: for running a
 * layer a band of rows at a time (so that the next layer can read the band while it is still
 * in cache). `input`, `output` and the channel strides are the whole layer's. */
void spnn_f32_dwconv_rows(const spnn_dwconv_shape* s, size_t c_begin, size_t c_end,
                          size_t row_begin, size_t row_end, const float* input,
                          const void* packed, float* output, float out_min, float out_max);
/* The input rows [*top, *bottom) that output rows [row_begin, row_end) read. */
void spnn_dwconv_input_rows(const spnn_dwconv_shape* s, size_t row_begin, size_t row_end,
                            size_t* top, size_t* bottom);
/* spnn_f32_dwconv_rows on input rows held elsewhere: `input_rows` holds rows [top, bottom)
 * (spnn_dwconv_input_rows) of each channel, `in_plane` floats from one channel to the next;
 * `output` is the whole layer's. */
void spnn_f32_dwconv_rows_at(const spnn_dwconv_shape* s, size_t c_begin, size_t c_end,
                             size_t row_begin, size_t row_end, const float* input_rows,
                             size_t in_plane, const void* packed, float* output, float out_min,
                             float out_max);

/* Whether a depthwise layer can read its input as split rows (see spnn_spmm_run_split):
 * 3x3, stride 2, rows a multiple of 8 wide and twice the output's, at most one column and
 * row of padding before. */
int spnn_dwconv_reads_split(const spnn_dwconv_shape* s);
/* spnn_f32_dwconv_rows_at on split rows: the same outputs, bit for bit. */
void spnn_f32_dwconv_split_rows_at(const spnn_dwconv_shape* s, size_t c_begin, size_t c_end,
                                   size_t row_begin, size_t row_end, const float* input_rows,
                                   size_t in_plane, const void* packed, float* output,
                                   float out_min, float out_max);

#ifdef __cplusplus
}
#endif
#endif /* SPNN_KERNELS_H */
