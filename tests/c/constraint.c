/* Structured output through the C API: constraints from a regex, a JSON Schema, a GBNF
 * grammar and choices; NULL and bad arguments; a constraint freed while a session uses it;
 * eval of a forbidden token; and PIPIT_ERR_INCOMPLETE when max_tokens is too small.
 * Usage: constraint MODEL OTHER_MODEL PROMPT */
#include <string.h>

#include "check.h"

typedef struct {
  char data[4096];
  size_t len;
} text_buf;

static int collect(const char *piece, size_t len, int32_t token, void *user) {
  (void)token;
  text_buf *t = user;
  if (t->len + len < sizeof t->data) {
    memcpy(t->data + t->len, piece, len);
    t->len += len;
  }
  return 0;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s MODEL OTHER_MODEL PROMPT\n", argv[0]);
    return 2;
  }
  const char *prompt = argv[3];
  pipit_model *m = NULL, *other = NULL;
  OK(pipit_model_open(argv[1], &m));
  OK(pipit_model_open(argv[2], &other));
  pipit_session_params sp;
  pipit_session_params_default(&sp);
  sp.n_ctx = 512;
  sp.n_threads = 2;
  pipit_session *s = NULL;
  OK(pipit_session_new(m, &sp, &s));
  pipit_sampler_params samp;
  pipit_sampler_params_default(&samp);
  samp.temperature = 1.0f;
  samp.seed = 7;

  /* NULLs and bad inputs. */
  pipit_constraint *c = (pipit_constraint *)1;
  EXPECT(pipit_constraint_regex(NULL, "a", &c), PIPIT_ERR_INVALID_ARGUMENT);
  CHECK(c == NULL);
  EXPECT(pipit_constraint_regex(m, NULL, &c), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_constraint_regex(m, "a", NULL), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_constraint_regex(m, "(a", &c), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_constraint_json_schema(m, "{\"type\":\"object\",\"if\":{}}", &c), PIPIT_ERR_UNSUPPORTED);
  CHECK(strstr(pipit_last_error(), "\"if\"") != NULL);
  EXPECT(pipit_constraint_gbnf(m, "root ::= undefined-rule\n", &c), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_constraint_choices(m, NULL, 2, &c), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_constraint_choices(m, NULL, 0, &c), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_set_constraint(NULL, NULL), PIPIT_ERR_INVALID_ARGUMENT);
  pipit_constraint_free(NULL);
  CHECK(strcmp(pipit_status_string(PIPIT_ERR_INCOMPLETE), "incomplete output") == 0);

  /* A regex: the generated output matches, even after the constraint is freed. */
  OK(pipit_constraint_regex(m, "[0-9]{3}-[0-9]{4}", &c));
  OK(pipit_session_set_constraint(s, c));
  pipit_constraint_free(c);
  text_buf t = {0};
  OK(pipit_generate(s, prompt, strlen(prompt), &samp, 32, collect, &t));
  CHECK(t.len == 8);
  for (int i = 0; i < 8; i++) CHECK(i == 3 ? t.data[i] == '-' : is_digit(t.data[i]));

  /* Eval of a forbidden token changes nothing; an allowed one is accepted. */
  OK(pipit_session_reset(s));
  OK(pipit_constraint_choices(m, (const char *const[]){"yes", "no"}, 2, &c));
  OK(pipit_session_set_constraint(s, c));
  int32_t toks[64];
  size_t n = 0;
  OK(pipit_tokenize(m, " maybe", 6, 0, toks, 64, &n));
  uint32_t before = pipit_session_n_past(s);
  EXPECT(pipit_session_eval(s, toks, n), PIPIT_ERR_INVALID_ARGUMENT);
  CHECK(pipit_session_n_past(s) == before);
  OK(pipit_tokenize(m, "yes", 3, 0, toks, 64, &n));
  OK(pipit_session_eval(s, toks, n));
  /* Sampling now may only end the output. */
  int32_t tok = -1;
  OK(pipit_session_sample(s, &samp, &tok));
  const char *piece = NULL;
  size_t plen = 0;
  OK(pipit_token_to_piece(m, tok, &piece, &plen));
  CHECK(plen == 0);

  /* Choices through generate, several seeds. */
  for (int seed = 0; seed < 5; seed++) {
    OK(pipit_session_reset(s));
    samp.seed = (uint64_t)seed;
    memset(&t, 0, sizeof t);
    OK(pipit_generate(s, prompt, strlen(prompt), &samp, 8, collect, &t));
    CHECK((t.len == 3 && memcmp(t.data, "yes", 3) == 0) || (t.len == 2 && memcmp(t.data, "no", 2) == 0));
  }
  pipit_constraint_free(c);

  /* JSON Schema and GBNF compile; a budget too small is PIPIT_ERR_INCOMPLETE. */
  OK(pipit_constraint_json_schema(m, "", &c));
  pipit_constraint_free(c);
  OK(pipit_constraint_gbnf(m, "root ::= \"[\" [a-z]+ \"]\"\n", &c));
  pipit_constraint_free(c);
  OK(pipit_constraint_json_schema(
      m, "{\"type\":\"object\",\"properties\":{\"name\":{\"const\":\"a rather long constant string\"}},\"required\":[\"name\"]}", &c));
  OK(pipit_session_reset(s));
  OK(pipit_session_set_constraint(s, c));
  memset(&t, 0, sizeof t);
  EXPECT(pipit_generate(s, prompt, strlen(prompt), &samp, 3, collect, &t), PIPIT_ERR_INCOMPLETE);
  CHECK(strstr(pipit_last_error(), "more bytes") != NULL);
  OK(pipit_session_reset(s));
  memset(&t, 0, sizeof t);
  OK(pipit_generate(s, prompt, strlen(prompt), &samp, 64, collect, &t));
  CHECK(t.len == strlen("{\"name\":\"a rather long constant string\"}"));

  /* A constraint of another model is refused; NULL clears. */
  pipit_constraint *oc = NULL;
  OK(pipit_constraint_regex(other, "x", &oc));
  EXPECT(pipit_session_set_constraint(s, oc), PIPIT_ERR_INVALID_ARGUMENT);
  pipit_constraint_free(oc);
  OK(pipit_session_set_constraint(s, NULL));
  pipit_constraint_free(c);

  pipit_session_free(s);
  pipit_model_free(m);
  pipit_model_free(other);
  printf("all checks passed\n");
  return 0;
}
