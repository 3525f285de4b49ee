/* model.h - a loaded model: the mapped file, its configuration, the weight
 * views bound by name, and the tokenizer. (Filled in by the foundation work.) */
#ifndef MOE_MODEL_H
#define MOE_MODEL_H

#include "file.h"
#include "moe.h"
#include "tokenizer.h"

/* The tokenizer of a model (never NULL after a successful moe_model_open). */
const moe_tokenizer *model_tokenizer(const moe_model *m);

#endif /* MOE_MODEL_H */
