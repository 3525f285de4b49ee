/* cmd_route.c - `moe route`: run a text through the model (teacher-forced,
 * in chunks of CTX tokens, batched) and report how it was routed: a summary
 * on stdout, and with -o DIR routing.json (every number) and three SVG plots:
 *   load_heatmap.svg     layer x expert share of the routed slots
 *   entropy_hist.svg     histogram of per-token router entropy, one panel per layer
 *   coact_layerN.svg     expert x expert co-activation of layer N
 * The numbers come from route_stats.c; definitions in docs/ROUTING.md. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "route_stats.h"

static const char *CMD = "route";

static void help(void) {
    printf("usage: moe route -m MODEL -f TEXT [-o DIR] [flags]\n\n"
           "Runs the text through the model (teacher-forced, chunks of CTX tokens) and reports per\n"
           "MoE layer: expert load and imbalance, router entropy, top-k weight mass, co-activation,\n"
           "how well one layer's top-1 expert predicts the next layer's, and each expert's most\n"
           "frequent tokens. With -o: DIR/routing.json and SVG plots (docs/ROUTING.md).\n\n"
           "  -m, --model FILE      model file, .moe or GGUF (a mixture-of-experts model)\n"
           "  -f, --file FILE       the text\n"
           "  -o, --out DIR         write routing.json, load_heatmap.svg, entropy_hist.svg,\n"
           "                        coact_layerN.svg into DIR (created if needed)\n"
           "  -c, --ctx-size N      tokens per chunk (default 512, at most the model's context)\n"
           "  -b, --batch-size N    tokens per forward batch (default: CTX)\n"
           "      --chunks N        at most N chunks (default: the whole text)\n"
           "      --layer L         layer of the co-activation plot (default: the middle MoE layer)\n"
           "  -t, --threads N       threads (default: all cores)\n");
    route_opts_help();
}

typedef struct {
    route_stats st;
    trace_writer *trace;
    int oom;
} route_user;

static void on_event(void *user, const moe_route_event *ev) {
    route_user *u = user;
    if (route_stats_add(&u->st, ev)) u->oom = 1;
}

/* the trace writer and the statistics both want the hook: chain them */
typedef struct {
    moe_route_hook first;
    void *first_user;
    route_user *stats;
} hook_pair;

static void on_both(void *user, const moe_route_event *ev) {
    hook_pair *h = user;
    if (h->first) h->first(h->first_user, ev);
    on_event(h->stats, ev);
}

/* ------------------------------------------------------------ output helpers */

static FILE *create(const char *dir, const char *name, char *path, size_t cap) {
    snprintf(path, cap, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) die(1, CMD, "cannot create %s: %s", path, strerror(errno));
    return f;
}

static void finish(FILE *f, const char *path) {
    if (ferror(f) || fclose(f) != 0) die(1, CMD, "error writing %s", path);
}

static void token_text(FILE *f, const moe_model *m, int id, int mode) {
    size_t len = 0;
    const char *s = moe_token_bytes(m, id, &len);
    put_text(f, (const unsigned char *)(s ? s : ""), s ? len : 0, mode);
}

/* viridis, 5 stops: t in [0, 1] -> "#rrggbb" */
static void color(char out[8], double t) {
    static const double stops[5][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
    if (!(t > 0)) t = 0;
    if (t > 1) t = 1;
    double x = t * 4;
    int i = x >= 4 ? 3 : (int)x;
    double f = x - i;
    int rgb[3];
    for (int c = 0; c < 3; c++) rgb[c] = (int)lround(stops[i][c] + f * (stops[i + 1][c] - stops[i][c]));
    snprintf(out, 8, "#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
}

static void svg_begin(FILE *f, int w, int h, const char *title) {
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"11\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
               "<text x=\"%d\" y=\"20\" font-size=\"14\" text-anchor=\"middle\">%s</text>\n",
            w, h, w, h, w / 2, title);
}

/* a vertical colour bar at (x, y), height h, labelled lo .. hi */
static void colorbar(FILE *f, int x, int y, int h, const char *lo, const char *hi, const char *label) {
    for (int i = 0; i < 50; i++) {
        char c[8];
        color(c, 1.0 - i / 49.0);
        fprintf(f, "<rect x=\"%d\" y=\"%.2f\" width=\"14\" height=\"%.2f\" fill=\"%s\"/>\n", x, y + i * h / 50.0,
                h / 50.0 + 0.5, c);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\">%s</text>\n<text x=\"%d\" y=\"%d\">%s</text>\n", x + 18, y + 9, hi, x + 18,
            y + h, lo);
    fprintf(f, "<text transform=\"translate(%d,%d) rotate(90)\" text-anchor=\"middle\">%s</text>\n", x + 50,
            y + h / 2, label);
}

/* ------------------------------------------------------------ plots */

static void plot_load(const char *dir, const route_stats *s, const int *ml, int nml, int k) {
    char path[4096];
    FILE *f = create(dir, "load_heatmap.svg", path, sizeof path);
    int E = s->n_experts, cw = E <= 16 ? 28 : E <= 64 ? 12 : E <= 128 ? 6 : 3, ch = nml <= 16 ? 22 : nml <= 48 ? 12 : 8;
    int left = 60, top = 40, W = left + E * cw + 110, H = top + nml * ch + 50;
    if (W < 420) W = 420;
    double mx = 0; /* colour: share of the layer's routed slots relative to uniform (1/E) */
    for (int i = 0; i < nml; i++) {
        const route_layer_stats *L = &s->layers[ml[i]];
        for (int e = 0; e < E; e++) {
            double r = (double)L->count[e] * E / ((double)L->n_tokens * k);
            if (r > mx) mx = r;
        }
    }
    if (mx <= 0) mx = 1;
    svg_begin(f, W, H, "Expert load: share of routed slots / uniform share");
    for (int i = 0; i < nml; i++) {
        const route_layer_stats *L = &s->layers[ml[i]];
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%d</text>\n", left - 6, top + i * ch + ch / 2 + 4,
                ml[i]);
        for (int e = 0; e < E; e++) {
            double share = (double)L->count[e] / ((double)L->n_tokens * k), r = share * E;
            char c[8];
            color(c, r / mx);
            fprintf(f,
                    "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\"><title>layer %d expert %d: "
                    "%lld of %lld slots, share %.4f (x%.2f uniform)</title></rect>\n",
                    left + e * cw, top + i * ch, cw, ch, c, ml[i], e, (long long)L->count[e],
                    (long long)L->n_tokens * k, share, r);
        }
    }
    int step = E <= 16 ? 1 : E <= 64 ? 4 : E <= 128 ? 8 : 32;
    for (int e = 0; e < E; e += step)
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%d</text>\n", left + e * cw + cw / 2,
                top + nml * ch + 14, e);
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">expert</text>\n", left + E * cw / 2, top + nml * ch + 32);
    fprintf(f, "<text transform=\"translate(16,%d) rotate(-90)\" text-anchor=\"middle\">layer</text>\n",
            top + nml * ch / 2);
    char hi[32];
    snprintf(hi, sizeof hi, "%.2f", mx);
    colorbar(f, left + E * cw + 14, top, nml * ch > 60 ? nml * ch : 60, "0", hi, "share x E");
    fputs("</svg>\n", f);
    finish(f, path);
}

static void plot_entropy(const char *dir, const route_stats *s, const int *ml, int nml) {
    char path[4096];
    FILE *f = create(dir, "entropy_hist.svg", path, sizeof path);
    int cols = nml < 4 ? nml : 4, rows = (nml + cols - 1) / cols, pw = 200, ph = 110, gap = 30;
    int W = cols * (pw + gap) + 40, H = 40 + rows * (ph + gap + 20) + 10;
    double hmax = log2((double)s->n_experts);
    svg_begin(f, W, H, "Router entropy per token (bits), one panel per layer");
    for (int i = 0; i < nml; i++) {
        const route_layer_stats *L = &s->layers[ml[i]];
        int x0 = 40 + (i % cols) * (pw + gap), y0 = 40 + (i / cols) * (ph + gap + 20);
        int64_t mx = 1;
        for (int b = 0; b < RS_ENTROPY_BINS; b++)
            if (L->entropy_hist[b] > mx) mx = L->entropy_hist[b];
        fprintf(f, "<text x=\"%d\" y=\"%d\">layer %d: mean %.3f of %.3f bits</text>\n", x0, y0 + 10, ml[i],
                L->entropy_mean, hmax);
        int bw = pw / RS_ENTROPY_BINS, base = y0 + 16 + ph - 16;
        for (int b = 0; b < RS_ENTROPY_BINS; b++) {
            double hgt = (double)L->entropy_hist[b] / (double)mx * (ph - 20);
            fprintf(f,
                    "<rect x=\"%d\" y=\"%.2f\" width=\"%d\" height=\"%.2f\" fill=\"#3b528b\"><title>%.3f-%.3f bits: "
                    "%lld tokens</title></rect>\n",
                    x0 + b * bw, base - hgt, bw - 1, hgt, hmax * b / RS_ENTROPY_BINS, hmax * (b + 1) / RS_ENTROPY_BINS,
                    (long long)L->entropy_hist[b]);
        }
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", x0, base,
                x0 + bw * RS_ENTROPY_BINS, base);
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">0</text>\n", x0, base + 13);
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%.2f</text>\n", x0 + bw * RS_ENTROPY_BINS,
                base + 13, hmax);
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"#555555\">bits (peak bin %lld tokens)</text>\n",
                x0 + bw * RS_ENTROPY_BINS / 2, base + 13, (long long)mx);
        double mx_x = x0 + L->entropy_mean / (hmax > 0 ? hmax : 1) * bw * RS_ENTROPY_BINS;
        fprintf(f, "<line x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" y2=\"%d\" stroke=\"#d62728\" stroke-dasharray=\"3,2\"/>\n",
                mx_x, y0 + 16, mx_x, base);
    }
    fputs("</svg>\n", f);
    finish(f, path);
}

static void plot_coact(const char *dir, const route_stats *s, int layer) {
    char name[64], path[4096];
    snprintf(name, sizeof name, "coact_layer%d.svg", layer);
    FILE *f = create(dir, name, path, sizeof path);
    const route_layer_stats *L = &s->layers[layer];
    int E = s->n_experts, cw = E <= 16 ? 24 : E <= 64 ? 9 : E <= 128 ? 5 : 3;
    int left = 50, top = 40, W = left + E * cw + 120, H = top + E * cw + 50;
    if (W < 420) W = 420;
    double mx = 0; /* colour: fraction of tokens that chose both experts */
    for (int a = 0; a < E; a++)
        for (int b = 0; b < E; b++)
            if (a != b && (double)L->coact[(size_t)a * E + b] > mx) mx = (double)L->coact[(size_t)a * E + b];
    char title[128];
    snprintf(title, sizeof title, "Layer %d: co-activation (tokens choosing both / all tokens)", layer);
    svg_begin(f, W, H, title);
    for (int a = 0; a < E; a++)
        for (int b = 0; b < E; b++) {
            int64_t v = L->coact[(size_t)a * E + b];
            char c[8];
            if (a == b) snprintf(c, sizeof c, "#dddddd");
            else color(c, mx > 0 ? (double)v / mx : 0);
            fprintf(f,
                    "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\"><title>experts %d and %d: %lld "
                    "tokens (%.4f)%s</title></rect>\n",
                    left + b * cw, top + a * cw, cw, cw, c, a, b, (long long)v, (double)v / (double)L->n_tokens,
                    a == b ? ", diagonal = load" : "");
        }
    int step = E <= 16 ? 1 : E <= 64 ? 4 : E <= 128 ? 8 : 32;
    for (int e = 0; e < E; e += step) {
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%d</text>\n", left + e * cw + cw / 2,
                top + E * cw + 14, e);
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%d</text>\n", left - 5, top + e * cw + cw / 2 + 4, e);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">expert</text>\n", left + E * cw / 2, top + E * cw + 32);
    char hi[32];
    snprintf(hi, sizeof hi, "%.3f", mx / (double)(L->n_tokens ? L->n_tokens : 1));
    colorbar(f, left + E * cw + 14, top, E * cw > 60 ? E * cw : 60, "0", hi, "fraction of tokens");
    fputs("</svg>\n", f);
    finish(f, path);
}

/* ------------------------------------------------------------ routing.json */

static void json_i64s(FILE *f, const int64_t *v, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, i ? ",%lld" : "%lld", (long long)v[i]);
    fputc(']', f);
}

static void json_matrix(FILE *f, const int64_t *v, int E) {
    fputc('[', f);
    for (int a = 0; a < E; a++) {
        if (a) fputc(',', f);
        json_i64s(f, v + (size_t)a * E, E);
    }
    fputc(']', f);
}

static void write_json(const char *dir, const moe_model *m, const route_stats *s, const int *ml, int nml, int k,
                       const char *model_path, const char *text_path, int n_tok, int ctx_len, int n_chunks,
                       const route_opts *ro) {
    char path[4096];
    FILE *f = create(dir, "routing.json", path, sizeof path);
    int E = s->n_experts;
    fprintf(f, "{\"model\":");
    put_text(f, (const unsigned char *)model_path, strlen(model_path), TEXT_JSON);
    fprintf(f, ",\"text\":");
    put_text(f, (const unsigned char *)text_path, strlen(text_path), TEXT_JSON);
    fprintf(f, ",\"tokens\":%d,\"ctx\":%d,\"chunks\":%d,\"n_experts\":%d,\"k\":%d,\"disabled\":", n_tok, ctx_len,
            n_chunks, E, k);
    if (ro->disable) put_text(f, (const unsigned char *)ro->disable, strlen(ro->disable), TEXT_JSON);
    else fputs("null", f);
    fprintf(f, ",\"entropy_bins\":%d,\"entropy_max_bits\":%.6f,\"layers\":[", RS_ENTROPY_BINS, log2((double)E));
    for (int i = 0; i < nml; i++) {
        const route_layer_stats *L = &s->layers[ml[i]];
        fprintf(f, "%s\n{\"layer\":%d,\"tokens\":%lld,\"count\":", i ? "," : "", ml[i], (long long)L->n_tokens);
        json_i64s(f, L->count, E);
        fputs(",\"share\":[", f);
        for (int e = 0; e < E; e++) fprintf(f, e ? ",%.6f" : "%.6f", (double)L->count[e] / ((double)L->n_tokens * k));
        fputs("],\"top1\":", f);
        json_i64s(f, L->top1, E);
        fprintf(f, ",\"cv\":%.6f,\"max_mean\":%.6f,\"entropy_mean_bits\":%.6f,\"topk_mass\":%.6f,\"entropy_hist\":",
                L->cv, L->max_mean, L->entropy_mean, L->mass_mean);
        json_i64s(f, L->entropy_hist, RS_ENTROPY_BINS);
        fputs(",\"coactivation\":", f);
        json_matrix(f, L->coact, E);
        fprintf(f, ",\"next_layer\":%d", L->next_layer);
        if (L->next_layer >= 0) {
            fprintf(f, ",\"pred_acc\":%.6f,\"pred_base\":%.6f,\"mutual_info_bits\":%.6f,\"transitions\":", L->pred_acc,
                    L->pred_base, L->mutual_info);
            json_matrix(f, L->trans, E);
        }
        fputs(",\"top_tokens\":[", f);
        for (int e = 0; e < E; e++) {
            fputs(e ? ",[" : "[", f);
            for (int j = 0; j < RS_TOP_TOKENS && L->top_tokens[(size_t)e * RS_TOP_TOKENS + j] >= 0; j++) {
                int id = L->top_tokens[(size_t)e * RS_TOP_TOKENS + j];
                fprintf(f, "%s{\"id\":%d,\"text\":", j ? "," : "", id);
                token_text(f, m, id, TEXT_JSON);
                fprintf(f, ",\"count\":%lld}", (long long)L->top_counts[(size_t)e * RS_TOP_TOKENS + j]);
            }
            fputc(']', f);
        }
        fputs("]}", f);
    }
    fputs("\n]}\n", f);
    finish(f, path);
}

/* ------------------------------------------------------------ summary */

static void summary(const moe_model *m, const route_stats *s, const int *ml, int nml, int k, int coact_layer) {
    int E = s->n_experts;
    printf("\n%5s %8s %7s %8s %15s %9s %17s %9s\n", "layer", "tokens", "cv", "max/mean", "entropy (bits)", "top-k mass",
           "next top-1 acc", "MI (bits)");
    for (int i = 0; i < nml; i++) {
        const route_layer_stats *L = &s->layers[ml[i]];
        printf("%5d %8lld %7.3f %8.2f %7.3f / %5.3f %9.3f ", ml[i], (long long)L->n_tokens, L->cv, L->max_mean,
               L->entropy_mean, log2((double)E), L->mass_mean);
        if (L->next_layer >= 0) printf("   %5.3f (%5.3f) %9.3f\n", L->pred_acc, L->pred_base, L->mutual_info);
        else printf("%17s %9s\n", "-", "-");
    }
    const route_layer_stats *L = &s->layers[coact_layer];
    printf("\nlayer %d, experts by load (share of %lld routed slots; uniform = %.4f) and their most frequent tokens:\n",
           coact_layer, (long long)L->n_tokens * k, 1.0 / E);
    int order[E];
    for (int e = 0; e < E; e++) order[e] = e;
    for (int i = 1; i < E; i++) /* insertion sort by count, descending */
        for (int j = i; j > 0 && L->count[order[j]] > L->count[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    int show = E <= 16 ? E : 8;
    for (int i = 0; i < show; i++) {
        int e = order[i];
        printf("  expert %3d  %.4f  ", e, (double)L->count[e] / ((double)L->n_tokens * k));
        for (int j = 0; j < 5 && L->top_tokens[(size_t)e * RS_TOP_TOKENS + j] >= 0; j++) {
            token_text(stdout, m, L->top_tokens[(size_t)e * RS_TOP_TOKENS + j], TEXT_CSV);
            printf("x%lld ", (long long)L->top_counts[(size_t)e * RS_TOP_TOKENS + j]);
        }
        printf("\n");
    }
    if (show < E) {
        int e = order[E - 1];
        printf("  ...\n  expert %3d  %.4f  (least used)\n", e, (double)L->count[e] / ((double)L->n_tokens * k));
    }
    /* the most frequent co-activated pair */
    int64_t best = -1;
    int ba = 0, bb = 0;
    for (int a = 0; a < E; a++)
        for (int b = a + 1; b < E; b++)
            if (L->coact[(size_t)a * E + b] > best) {
                best = L->coact[(size_t)a * E + b];
                ba = a;
                bb = b;
            }
    if (k > 1 && best >= 0)
        printf("most frequent pair: experts %d and %d, together on %.4f of tokens\n", ba, bb,
               (double)best / (double)L->n_tokens);
}

/* ------------------------------------------------------------ command */

int cmd_route(int argc, char **argv) {
    args a = {CMD, argc, 0, argv};
    const char *model = NULL, *file = NULL, *out = NULL, *flag;
    int ctx_len = 512, ctx_given = 0, max_chunks = 0, layer_arg = -1;
    moe_ctx_params cp = moe_ctx_default_params();
    route_opts ro = {0, NULL, NULL, 0};
    while (args_next(&a, &flag)) {
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) { help(); return 0; }
        else if (!strcmp(flag, "-m") || !strcmp(flag, "--model")) model = args_value(&a, flag);
        else if (!strcmp(flag, "-f") || !strcmp(flag, "--file")) file = args_value(&a, flag);
        else if (!strcmp(flag, "-o") || !strcmp(flag, "--out")) out = args_value(&a, flag);
        else if (!strcmp(flag, "-c") || !strcmp(flag, "--ctx-size")) {
            ctx_len = args_int(&a, flag, 2, 1 << 20);
            ctx_given = 1;
        } else if (!strcmp(flag, "-b") || !strcmp(flag, "--batch-size")) cp.n_batch = args_int(&a, flag, 1, 1 << 16);
        else if (!strcmp(flag, "-t") || !strcmp(flag, "--threads")) cp.n_threads = args_int(&a, flag, 1, 1024);
        else if (!strcmp(flag, "--chunks")) max_chunks = args_int(&a, flag, 1, 1 << 30);
        else if (!strcmp(flag, "--layer")) layer_arg = args_int(&a, flag, 0, 1 << 20);
        else if (route_flag(&a, flag, &ro)) continue;
        else die(EXIT_USAGE, CMD, "unknown flag \"%s\" (see moe route -h)", flag);
    }
    if (!file) die(EXIT_USAGE, CMD, "-f TEXT is required");
    /* before any work: a report that cannot be written fails first */
    if (out && mkdir(out, 0777) != 0 && errno != EEXIST) die(1, CMD, "cannot create %s: %s", out, strerror(errno));
    if (out && access(out, W_OK) != 0) die(1, CMD, "cannot write into %s: %s", out, strerror(errno));
    size_t len;
    char *text = read_file_or_die(CMD, file, &len);
    const char *model_path = model ? model : default_model_path(argv[0]);
    moe_model *m = open_model_or_die(CMD, model_path);
    moe_model_info info;
    moe_model_get_info(m, &info);
    if (!info.has_weights) die(1, CMD, "this is a tokenizer-only file: it has no weights to run");
    if (!info.n_experts) die(EXIT_USAGE, CMD, "the model is dense: it has no experts to route to");
    if (ctx_len > info.max_ctx) {
        if (ctx_given) die(EXIT_USAGE, CMD, "-c %d exceeds the model's context of %d", ctx_len, info.max_ctx);
        ctx_len = info.max_ctx;
    }
    int ml[info.n_layers], nml = 0; /* the MoE layers */
    for (int l = 0; l < info.n_layers; l++)
        if (moe_layer_is_moe(m, l)) ml[nml++] = l;
    int coact_layer = layer_arg >= 0 ? layer_arg : ml[nml / 2];
    if (!moe_layer_is_moe(m, coact_layer))
        die(EXIT_USAGE, CMD, "--layer %d is not a MoE layer (MoE layers: %d..%d)", coact_layer, ml[0], ml[nml - 1]);

    int n_tok;
    int32_t *toks = tokenize_or_die(CMD, m, text, len, MOE_TOK_ADD_BOS, &n_tok);
    if (n_tok < 1) die(EXIT_USAGE, CMD, "the text has no tokens");
    int n_chunks = (n_tok + ctx_len - 1) / ctx_len;
    if (max_chunks && n_chunks > max_chunks) n_chunks = max_chunks;

    cp.n_ctx = ctx_len;
    if (!cp.n_batch) cp.n_batch = ctx_len;
    moe_ctx *ctx = route_ctx_new(CMD, m, &cp, &ro);
    int k = ro.n_active ? ro.n_active : info.n_active;
    trace_writer *trace = trace_open(CMD, m, ctx, &ro);

    route_user u;
    moe_err err = {{0}};
    if (route_stats_init(&u.st, info.n_layers, info.n_experts, ctx_len, &err)) die(1, CMD, "%s", err.msg);
    u.oom = 0;
    /* trace_open installed its own hook; wrap it so both see every event */
    hook_pair hp = {NULL, NULL, &u};
    if (trace) {
        hp.first = trace_hook(trace);
        hp.first_user = trace;
    }
    moe_ctx_set_route_hook(ctx, on_both, &hp);

    double t0 = now_seconds();
    int done = 0;
    for (int c = 0; c < n_chunks; c++) {
        int n = n_tok - c * ctx_len < ctx_len ? n_tok - c * ctx_len : ctx_len;
        moe_ctx_reset(ctx);
        if (moe_eval(ctx, toks + (size_t)c * ctx_len, n, NULL, &err)) die(1, CMD, "%s", err.msg);
        trace_flush(trace);
        if (u.oom) die(1, CMD, "out of memory for the statistics");
        done += n;
    }
    double dt = now_seconds() - t0;
    if (route_stats_finish(&u.st, &err)) die(1, CMD, "%s", err.msg);
    printf("route: %s, %d token%s of %s in %d chunk%s of <= %d (%.1f tokens/s); %d experts, k = %d%s%s\n",
           info.arch, done, plural(done), file, n_chunks, plural(n_chunks), ctx_len, done / (dt > 0 ? dt : 1e-9), info.n_experts, k,
           ro.disable ? ", disabled " : "", ro.disable ? ro.disable : "");
    summary(m, &u.st, ml, nml, k, coact_layer);
    if (out) {
        write_json(out, m, &u.st, ml, nml, k, model_path, file, done, ctx_len, n_chunks, &ro);
        plot_load(out, &u.st, ml, nml, k);
        plot_entropy(out, &u.st, ml, nml);
        plot_coact(out, &u.st, coact_layer);
        printf("\nwrote %s/routing.json, load_heatmap.svg, entropy_hist.svg, coact_layer%d.svg\n", out, coact_layer);
    }
    size_t rows = trace_close(trace);
    if (ro.trace_path) fprintf(stderr, "trace: %zu rows -> %s\n", rows, ro.trace_path);

    route_stats_free(&u.st);
    free(toks);
    free(text);
    moe_ctx_free(ctx);
    moe_model_free(m);
    return 0;
}
