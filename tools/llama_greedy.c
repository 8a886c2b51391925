/* Greedy text of a GGUF model through llama.cpp's C API, as llama-simple makes it (BOS and
 * the prompt's tokens in one batch, then one token per step, stopping at end-of-generation)
 * but with flash attention off and an F32 KV cache unless told otherwise, so the reference
 * is llama.cpp's plain f32 arithmetic rather than its F16 flash-attention path.
 * An oracle for tools/family_reference.py, built against the peer's static libraries.
 *
 * usage: llama_greedy MODEL N_PREDICT PROMPT [fa-f16]
 * stdout: the generated text (each token's piece, special tokens rendered) and a newline,
 *         as llama-simple ends its output.
 * stderr: "n_ctx_seq N", then per step "step I token T margin M" (M: the top logit minus
 *         the runner-up's), after llama.cpp's own log.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level >= GGML_LOG_LEVEL_WARN) fputs(text, stderr);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL N_PREDICT PROMPT [fa-f16]\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    int n_predict = atoi(argv[2]);
    const char *prompt = argv[3];
    int fa_f16 = argc > 4 && strcmp(argv[4], "fa-f16") == 0;
    if (n_predict < 1) {
        fprintf(stderr, "N_PREDICT must be positive\n");
        return 2;
    }

    llama_log_set(quiet, NULL);
    ggml_backend_load_all();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(path, mp);
    if (!model) {
        fprintf(stderr, "%s: cannot load\n", path);
        return 1;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int n_vocab = llama_vocab_n_tokens(vocab);

    /* The prompt's tokens, with BOS as the vocabulary asks, special tokens parsed. */
    int len = (int)strlen(prompt);
    int n_prompt = -llama_tokenize(vocab, prompt, len, NULL, 0, true, true);
    llama_token *tokens = malloc(sizeof(llama_token) * (size_t)(n_prompt + n_predict));
    if (!tokens || llama_tokenize(vocab, prompt, len, tokens, n_prompt, true, true) < 0) {
        fprintf(stderr, "cannot tokenize the prompt\n");
        return 1;
    }

    /* llama-simple's context: the prompt plus the generated tokens but the last. */
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(n_prompt + n_predict - 1);
    cp.n_batch = (uint32_t)n_prompt;
    cp.no_perf = true;
    cp.flash_attn_type = fa_f16 ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.type_k = fa_f16 ? GGML_TYPE_F16 : GGML_TYPE_F32;
    cp.type_v = fa_f16 ? GGML_TYPE_F16 : GGML_TYPE_F32;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "cannot create the context\n");
        return 1;
    }
    fprintf(stderr, "n_ctx_seq %u\n", llama_n_ctx_seq(ctx));

    struct llama_batch batch = llama_batch_get_one(tokens, n_prompt);
    int n_past = n_prompt;
    for (int step = 0; step < n_predict; step++) {
        if (llama_decode(ctx, batch) != 0) {
            fprintf(stderr, "llama_decode failed at step %d\n", step);
            return 1;
        }
        /* Greedy: the first largest logit, and its margin over the runner-up. */
        const float *logits = llama_get_logits_ith(ctx, -1);
        int best = 0, second = -1;
        for (int i = 1; i < n_vocab; i++) {
            if (logits[i] > logits[best]) {
                second = best;
                best = i;
            } else if (second < 0 || logits[i] > logits[second]) {
                second = i;
            }
        }
        fprintf(stderr, "step %d token %d margin %.6f\n", step, best,
                logits[best] - logits[second]);
        if (llama_vocab_is_eog(vocab, best)) break;
        char piece[256];
        int n = llama_token_to_piece(vocab, best, piece, sizeof piece, 0, true);
        if (n < 0) {
            fprintf(stderr, "cannot render token %d\n", best);
            return 1;
        }
        fwrite(piece, 1, (size_t)n, stdout);
        fflush(stdout);
        tokens[n_past] = best;
        batch = llama_batch_get_one(&tokens[n_past], 1);
        n_past++;
    }
    putchar('\n');
    llama_free(ctx);
    llama_model_free(model);
    free(tokens);
    return 0;
}
