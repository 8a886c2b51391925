/* pipit_chat_render: a conversation rendered with the model's chat template, then a greedy
 * reply to it. Usage: chat MODEL NO_TEMPLATE_MODEL USER_MESSAGE MAX_TOKENS
 * MODEL is SmolLM2 (ChatML with a default system message, no BOS); NO_TEMPLATE_MODEL has
 * no tokenizer.chat_template and adds BOS. Prints the greedy reply to USER_MESSAGE on stdout (what
 * `pipit chat --temp 0 -n MAX_TOKENS` prints for that message), the verdict on stderr. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define SMOL_SYSTEM "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

static char out[1 << 14];

/* Renders into `out` and checks the result equals `want` (a NUL-terminated string). */
static void render_equals(const pipit_model *m, const char *tmpl, const pipit_chat_message *msgs,
                          size_t n, const char *want) {
  size_t len = 0;
  OK(pipit_chat_render(m, tmpl, msgs, n, out, sizeof out, &len));
  CHECK(len == strlen(want));
  CHECK(out[len] == '\0');
  if (strcmp(out, want) != 0) {
    fprintf(stderr, "rendered:\n%s\nwanted:\n%s\n", out, want);
    exit(1);
  }
}

static int print_piece(const char *piece, size_t len, int32_t token, void *user) {
  (void)token;
  (void)user;
  fwrite(piece, 1, len, stdout);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s MODEL NO_TEMPLATE_MODEL USER_MESSAGE MAX_TOKENS\n", argv[0]);
    return 2;
  }
  pipit_model *m = NULL, *bare = NULL;
  OK(pipit_model_open(argv[1], &m));
  OK(pipit_model_open(argv[2], &bare));

  /* Whether a context opens with BOS. */
  CHECK(pipit_model_adds_bos(m) == 0);
  CHECK(pipit_model_adds_bos(bare) == 1);
  CHECK(pipit_model_adds_bos(NULL) == 0);

  /* The model's own template, with its default system message, then an explicit one and
     earlier turns (user text is trimmed, replies are kept as they are). */
  pipit_chat_message one[] = {{"user", "Hi"}};
  render_equals(m, NULL, one, 1,
                "<|im_start|>system\n" SMOL_SYSTEM "<|im_end|>\n"
                "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  pipit_chat_message conv[] = {
      {"system", "Be brief."}, {"user", " Hi \n"}, {"assistant", "Hello!"}, {"user", "Bye"}};
  const char *conv_chatml =
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
      "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
      "<|im_start|>assistant\n";
  render_equals(m, NULL, conv, 4, conv_chatml);
  /* Named templates; a model without a template can use them. */
  render_equals(bare, "chatml", conv, 4, conv_chatml);
  render_equals(m, "gemma", conv, 4,
                "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
                "Hello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n");
  render_equals(m, "llama3", one, 1,
                "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n");
  /* No template in the file and none named. */
  size_t len = 99;
  EXPECT(pipit_chat_render(bare, NULL, one, 1, out, sizeof out, &len), PIPIT_ERR_UNSUPPORTED);
  CHECK(strstr(pipit_last_error(), "\"chatml\"") != NULL);

  /* Sizing: a NULL buffer of capacity 0 asks for the length; the NUL needs one more byte. */
  size_t need = 0;
  EXPECT(pipit_chat_render(m, NULL, conv, 4, NULL, 0, &need), PIPIT_ERR_BUFFER_TOO_SMALL);
  CHECK(need == strlen(conv_chatml));
  memset(out, 'x', sizeof out);
  EXPECT(pipit_chat_render(m, NULL, conv, 4, out, need, &len), PIPIT_ERR_BUFFER_TOO_SMALL);
  CHECK(len == need && out[0] == 'x');
  OK(pipit_chat_render(m, NULL, conv, 4, out, need + 1, &len));
  CHECK(len == need && out[need] == '\0');

  /* Malformed calls. */
  EXPECT(pipit_chat_render(NULL, NULL, one, 1, out, sizeof out, &len), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_chat_render(m, NULL, one, 1, out, sizeof out, NULL), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_chat_render(m, NULL, NULL, 1, out, sizeof out, &len), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_chat_render(m, NULL, one, 0, out, sizeof out, &len), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_chat_render(m, NULL, one, 1, NULL, sizeof out, &len), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_chat_render(m, "jinja", one, 1, out, sizeof out, &len), PIPIT_ERR_INVALID_ARGUMENT);
  CHECK(strstr(pipit_last_error(), "jinja") != NULL);
  pipit_chat_message ends_with_reply[] = {{"user", "Hi"}, {"assistant", "Hello"}};
  EXPECT(pipit_chat_render(m, NULL, ends_with_reply, 2, out, sizeof out, &len),
         PIPIT_ERR_INVALID_ARGUMENT);
  pipit_chat_message two_users[] = {{"user", "Hi"}, {"user", "Hello"}, {"user", "?"}};
  EXPECT(pipit_chat_render(m, NULL, two_users, 3, out, sizeof out, &len), PIPIT_ERR_INVALID_ARGUMENT);
  CHECK(strstr(pipit_last_error(), "messages[1]") != NULL);
  pipit_chat_message late_system[] = {{"user", "Hi"}, {"system", "x"}, {"user", "?"}};
  EXPECT(pipit_chat_render(m, NULL, late_system, 3, out, sizeof out, &len),
         PIPIT_ERR_INVALID_ARGUMENT);
  pipit_chat_message null_role[] = {{NULL, "Hi"}};
  EXPECT(pipit_chat_render(m, NULL, null_role, 1, out, sizeof out, &len), PIPIT_ERR_INVALID_ARGUMENT);
  pipit_chat_message null_content[] = {{"user", NULL}};
  EXPECT(pipit_chat_render(m, NULL, null_content, 1, out, sizeof out, &len),
         PIPIT_ERR_INVALID_ARGUMENT);
  pipit_chat_message bad_utf8[] = {{"user", "caf\xc3"}};
  EXPECT(pipit_chat_render(m, NULL, bad_utf8, 1, out, sizeof out, &len), PIPIT_ERR_INVALID_ARGUMENT);

  /* The reply to one user message, greedy, as `pipit chat --temp 0` gives it. */
  pipit_chat_message ask[] = {{"user", argv[3]}};
  OK(pipit_chat_render(m, NULL, ask, 1, out, sizeof out, &len));
  pipit_model_info info;
  OK(pipit_model_get_info(m, &info));
  pipit_session_params sp;
  pipit_session_params_default(&sp);
  if (sp.n_ctx > info.n_ctx_train) sp.n_ctx = info.n_ctx_train;
  pipit_session *s = NULL;
  OK(pipit_session_new(m, &sp, &s));
  pipit_sampler_params p;
  pipit_sampler_params_default(&p);
  p.temperature = 0.0f;
  OK(pipit_generate(s, out, len, &p, (uint32_t)strtoul(argv[4], NULL, 10), print_piece, NULL));
  putchar('\n');

  pipit_session_free(s);
  pipit_model_free(bare);
  pipit_model_free(m);
  fprintf(stderr, "all checks passed\n");
  return 0;
}
