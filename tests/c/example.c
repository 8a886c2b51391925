/* Generate a continuation of a prompt with pipit's C API.
 *
 *   cc example.c $(pkg-config --cflags --libs pipit) -o example
 *   ./example models/SmolLM2-135M-Instruct.pipit "The capital of France is" 32
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipit.h"

/* Called with each piece of text as it is generated (whole UTF-8 characters). */
static int print_piece(const char *piece, size_t len, int32_t token, void *user) {
  (void)token;
  (void)user;
  fwrite(piece, 1, len, stdout);
  fflush(stdout);
  return 0; /* nonzero stops the generation */
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL PROMPT [MAX_TOKENS]\n", argv[0]);
    return 2;
  }
  uint32_t max_tokens = argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 10) : 128;

  pipit_model *model = NULL;
  pipit_status st = pipit_model_open(argv[1], &model);
  if (st != PIPIT_OK) {
    fprintf(stderr, "cannot open %s: %s: %s\n", argv[1], pipit_status_string(st), pipit_last_error());
    return 1;
  }

  pipit_model_info info;
  pipit_model_get_info(model, &info);
  fprintf(stderr, "%s (%s): %u layers, %u tokens\n", info.name, info.architecture, info.n_layer, info.n_vocab);

  pipit_session_params sp;
  pipit_session_params_default(&sp); /* 2048 tokens of context, all cores */
  if (sp.n_ctx > info.n_ctx_train) sp.n_ctx = info.n_ctx_train;
  pipit_session *session = NULL;
  st = pipit_session_new(model, &sp, &session);
  pipit_model_free(model); /* the session keeps its own reference */
  if (st != PIPIT_OK) {
    fprintf(stderr, "cannot create a session: %s\n", pipit_last_error());
    return 1;
  }

  pipit_sampler_params params;
  pipit_sampler_params_default(&params);
  params.temperature = 0.0f; /* greedy: the same text as `pipit run --temp 0` */

  st = pipit_generate(session, argv[2], strlen(argv[2]), &params, max_tokens, print_piece, NULL);
  putchar('\n');
  if (st != PIPIT_OK)
    fprintf(stderr, "generation stopped: %s: %s\n", pipit_status_string(st), pipit_last_error());
  pipit_session_free(session);
  return st == PIPIT_OK ? 0 : 1;
}
