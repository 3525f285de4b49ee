/* writer.h - write a .moe file (docs/FORMAT.md) from C, streaming: declare
 * metadata and tensors, begin (header + directory), then append each
 * tensor's bytes in order; the writer pads to the alignment. Used by
 * `moe quantize`. Writes to PATH.part and renames on success. */
#ifndef MOE_WRITER_H
#define MOE_WRITER_H

#include <stdint.h>
#include <stdio.h>

#include "file.h"

typedef struct moe_writer moe_writer;

moe_writer *writer_new(void);
void writer_free(moe_writer *w);
/* Copy one metadata entry (key, type and value) from a parsed file. */
int writer_add_kv(moe_writer *w, const moe_kv *kv);
int writer_add_tensor(moe_writer *w, const char *name, moe_dtype dt, int n_dims, const uint64_t *dims);
int writer_begin(moe_writer *w, const char *path, moe_err *err);
/* Append bytes of the current tensor; a tensor is complete after exactly its size. */
int writer_append(moe_writer *w, const void *data, size_t n, moe_err *err);
int writer_finish(moe_writer *w, moe_err *err);
uint64_t writer_tensor_bytes(const moe_writer *w, int i);

#endif /* MOE_WRITER_H */
