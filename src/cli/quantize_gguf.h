/* quantize_gguf.h - moe quantize's GGUF output (quantize_gguf.c). */
#ifndef MOE_QUANTIZE_GGUF_H
#define MOE_QUANTIZE_GGUF_H

#include <stdint.h>

#include "gguf.h"

/* Write g's tensors as a GGUF file at path (through path.part, renamed when
 * whole), tensor i in dtype want[i] (-1: as it is; Q4_K rounded by ggml's
 * reference algorithm), the metadata g's with general.file_type = file_type
 * (a llama_ftype) and general.quantization_version 2. Dies with one line on
 * an error. */
void quantize_write_gguf(const gguf_file *g, const int *want, uint32_t file_type, const char *path);

#endif /* MOE_QUANTIZE_GGUF_H */
