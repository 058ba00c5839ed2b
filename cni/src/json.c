// SPDX-License-Identifier: Apache-2.0
// The strict JSON reader of json.h: recursive descent over the bytes, bounded depth and token count,
// UTF-8 checked, every value's span recorded. Written for input from a root-owned runtime, but it
// treats every byte as hostile anyway: a plugin that crashes leaves a pod in an unknown state.
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct parser {
  struct json_doc *d;
  size_t pos;
  int depth;
};

static int fail(struct parser *p, const char *what) {
  snprintf(p->d->error, sizeof(p->d->error), "%s at byte %zu", what, p->pos);
  return -1;
}

static void skip_ws(struct parser *p) {
  const char *t = p->d->text;
  while (p->pos < p->d->len && (t[p->pos] == ' ' || t[p->pos] == '\t' || t[p->pos] == '\n' || t[p->pos] == '\r')) p->pos++;
}

static int new_token(struct parser *p, enum json_type type) {
  struct json_doc *d = p->d;
  if (d->ntok == d->cap) {
    if (d->cap >= JSON_MAX_TOKENS) return fail(p, "more than 65536 JSON values");
    int cap = d->cap ? d->cap * 2 : 64;
    if (cap > JSON_MAX_TOKENS) cap = JSON_MAX_TOKENS;
    struct json_token *t = realloc(d->tok, (size_t)cap * sizeof(*t));
    if (!t) return fail(p, "out of memory");
    d->tok = t;
    d->cap = cap;
  }
  int i = d->ntok++;
  d->tok[i] = (struct json_token){.type = type, .start = p->pos, .end = p->pos, .count = 0, .next = i + 1};
  return i;
}

static int hex4(const char *s, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = s[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is not one (overlong forms, surrogates
 * and code points past U+10FFFF are refused, as RFC 3629 says). */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t len;
  unsigned lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c == 0xE0) len = 3, lo = 0xA0;
  else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) len = 3;
  else if (c == 0xED) len = 3, hi = 0x9F;
  else if (c == 0xF0) len = 4, lo = 0x90;
  else if (c >= 0xF1 && c <= 0xF3) len = 4;
  else if (c == 0xF4) len = 4, hi = 0x8F;
  else return 0;
  if (n < len) return 0;
  if (s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return len;
}

static int parse_string(struct parser *p) {
  const char *t = p->d->text;
  size_t len = p->d->len;
  int i = new_token(p, JSON_STRING);
  if (i < 0) return -1;
  p->pos++; /* the opening quote */
  for (;;) {
    if (p->pos >= len) return fail(p, "unterminated string");
    unsigned char c = (unsigned char)t[p->pos];
    if (c == '"') {
      p->pos++;
      break;
    }
    if (c == '\\') {
      if (p->pos + 1 >= len) return fail(p, "unterminated escape");
      char e = t[p->pos + 1];
      if (e == 'u') {
        unsigned cp;
        if (p->pos + 6 > len || hex4(t + p->pos + 2, &cp) < 0) return fail(p, "bad \\u escape");
        p->pos += 6;
      } else if (e != '\0' && strchr("\"\\/bfnrt", e)) {
        p->pos += 2;
      } else {
        return fail(p, "bad escape");
      }
      continue;
    }
    if (c < 0x20) return fail(p, "control character in string");
    if (c < 0x80) {
      p->pos++;
      continue;
    }
    size_t n = utf8_len((const unsigned char *)t + p->pos, len - p->pos);
    if (!n) return fail(p, "invalid UTF-8");
    p->pos += n;
  }
  p->d->tok[i].end = p->pos;
  p->d->tok[i].next = p->d->ntok;
  return i;
}

static int digits(struct parser *p) {
  size_t from = p->pos;
  while (p->pos < p->d->len && p->d->text[p->pos] >= '0' && p->d->text[p->pos] <= '9') p->pos++;
  return p->pos > from ? 0 : -1;
}

static int parse_number(struct parser *p) {
  const char *t = p->d->text;
  size_t len = p->d->len;
  int i = new_token(p, JSON_NUMBER);
  if (i < 0) return -1;
  if (t[p->pos] == '-') p->pos++;
  if (p->pos >= len) return fail(p, "bad number");
  if (t[p->pos] == '0') p->pos++;
  else if (digits(p) < 0) return fail(p, "bad number");
  if (p->pos < len && t[p->pos] == '.') {
    p->pos++;
    if (digits(p) < 0) return fail(p, "bad number fraction");
  }
  if (p->pos < len && (t[p->pos] == 'e' || t[p->pos] == 'E')) {
    p->pos++;
    if (p->pos < len && (t[p->pos] == '+' || t[p->pos] == '-')) p->pos++;
    if (digits(p) < 0) return fail(p, "bad number exponent");
  }
  p->d->tok[i].end = p->pos;
  p->d->tok[i].next = p->d->ntok;
  return i;
}

static int parse_literal(struct parser *p, const char *word, enum json_type type) {
  size_t n = strlen(word);
  if (p->d->len - p->pos < n || memcmp(p->d->text + p->pos, word, n) != 0) return fail(p, "unexpected character");
  int i = new_token(p, type);
  if (i < 0) return -1;
  p->pos += n;
  p->d->tok[i].end = p->pos;
  return i;
}

static int parse_value(struct parser *p);

static int parse_container(struct parser *p, int object) {
  if (++p->depth > JSON_MAX_DEPTH) return fail(p, "nesting deeper than 64");
  int i = new_token(p, object ? JSON_OBJECT : JSON_ARRAY);
  if (i < 0) return -1;
  char close = object ? '}' : ']';
  p->pos++;
  skip_ws(p);
  if (p->pos < p->d->len && p->d->text[p->pos] == close) {
    p->pos++;
  } else {
    for (;;) {
      skip_ws(p);
      if (object) {
        if (p->pos >= p->d->len || p->d->text[p->pos] != '"') return fail(p, "expected a string key");
        if (parse_string(p) < 0) return -1;
        skip_ws(p);
        if (p->pos >= p->d->len || p->d->text[p->pos] != ':') return fail(p, "expected ':'");
        p->pos++;
      }
      if (parse_value(p) < 0) return -1;
      p->d->tok[i].count++;
      skip_ws(p);
      if (p->pos >= p->d->len) return fail(p, "unexpected end of input");
      char c = p->d->text[p->pos++];
      if (c == close) break;
      if (c != ',') {
        p->pos--;
        return fail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
      }
    }
  }
  p->d->tok[i].end = p->pos;
  p->d->tok[i].next = p->d->ntok;
  p->depth--;
  return i;
}

static int parse_value(struct parser *p) {
  skip_ws(p);
  if (p->pos >= p->d->len) return fail(p, "unexpected end of input");
  char c = p->d->text[p->pos];
  switch (c) {
  case '{': return parse_container(p, 1);
  case '[': return parse_container(p, 0);
  case '"': return parse_string(p);
  case 't': return parse_literal(p, "true", JSON_TRUE);
  case 'f': return parse_literal(p, "false", JSON_FALSE);
  case 'n': return parse_literal(p, "null", JSON_NULL);
  default:
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p);
    return fail(p, "unexpected character");
  }
}

int json_parse(struct json_doc *doc, const char *text, size_t len) {
  memset(doc, 0, sizeof(*doc));
  doc->text = text;
  doc->len = len;
  struct parser p = {.d = doc, .pos = 0, .depth = 0};
  if (parse_value(&p) < 0) return -1;
  skip_ws(&p);
  if (p.pos != len) return fail(&p, "trailing characters after the document");
  return 0;
}

void json_free(struct json_doc *doc) {
  free(doc->tok);
  doc->tok = NULL;
  doc->ntok = doc->cap = 0;
}

static void put_utf8(char *out, size_t *n, unsigned cp) {
  if (cp < 0x80) {
    out[(*n)++] = (char)cp;
  } else if (cp < 0x800) {
    out[(*n)++] = (char)(0xC0 | (cp >> 6));
    out[(*n)++] = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out[(*n)++] = (char)(0xE0 | (cp >> 12));
    out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[(*n)++] = (char)(0x80 | (cp & 0x3F));
  } else {
    out[(*n)++] = (char)(0xF0 | (cp >> 18));
    out[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[(*n)++] = (char)(0x80 | (cp & 0x3F));
  }
}

int json_string(const struct json_doc *doc, int t, char *out, size_t cap) {
  if (t < 0 || t >= doc->ntok || doc->tok[t].type != JSON_STRING || cap == 0) return -1;
  const char *s = doc->text;
  size_t i = doc->tok[t].start + 1, end = doc->tok[t].end - 1, n = 0;
  while (i < end) {
    unsigned char c = (unsigned char)s[i];
    if (c != '\\') {
      if (n + 1 >= cap) return -1;
      out[n++] = (char)c;
      i++;
      continue;
    }
    char e = s[i + 1];
    unsigned cp;
    i += 2;
    switch (e) {
    case 'b': cp = '\b'; break;
    case 'f': cp = '\f'; break;
    case 'n': cp = '\n'; break;
    case 'r': cp = '\r'; break;
    case 't': cp = '\t'; break;
    case 'u':
      hex4(s + i, &cp); /* validated by the parser */
      i += 4;
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        unsigned lo;
        if (i + 6 <= end && s[i] == '\\' && s[i + 1] == 'u' && hex4(s + i + 2, &lo) == 0 && lo >= 0xDC00 && lo <= 0xDFFF) {
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          i += 6;
        } else {
          cp = 0xFFFD; /* a lone surrogate: what Go's decoder makes of it */
        }
      } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
        cp = 0xFFFD;
      }
      break;
    default: cp = (unsigned char)e; break; /* " \ / */
    }
    if (cp == 0) return -1;
    if (n + 5 >= cap) return -1;
    put_utf8(out, &n, cp);
  }
  out[n] = '\0';
  return (int)n;
}

int json_get(const struct json_doc *doc, int obj, const char *key) {
  if (obj < 0 || obj >= doc->ntok || doc->tok[obj].type != JSON_OBJECT) return -1;
  char name[256];
  int found = -1, i = obj + 1;
  for (int m = 0; m < doc->tok[obj].count; m++) {
    int k = i, v = i + 1;
    if (json_string(doc, k, name, sizeof(name)) >= 0 && strcmp(name, key) == 0) found = v;
    i = doc->tok[v].next;
  }
  return found;
}

int json_at(const struct json_doc *doc, int arr, int idx) {
  if (arr < 0 || arr >= doc->ntok || doc->tok[arr].type != JSON_ARRAY || idx < 0 || idx >= doc->tok[arr].count) return -1;
  int i = arr + 1;
  for (int k = 0; k < idx; k++) i = doc->tok[i].next;
  return i;
}

int json_int(const struct json_doc *doc, int t, int64_t min, int64_t max, int64_t *out) {
  if (t < 0 || t >= doc->ntok || doc->tok[t].type != JSON_NUMBER) return -1;
  const char *s = doc->text + doc->tok[t].start;
  size_t n = doc->tok[t].end - doc->tok[t].start, i = 0;
  int neg = 0;
  if (s[0] == '-') neg = 1, i = 1;
  int64_t v = 0;
  for (; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1; /* a fraction or an exponent */
    if (v > (INT64_MAX - (s[i] - '0')) / 10) return -1;
    v = v * 10 + (s[i] - '0');
  }
  if (neg) v = -v;
  if (v < min || v > max) return -1;
  *out = v;
  return 0;
}

int json_put_string(char *buf, size_t cap, size_t *pos, const char *s) {
  size_t n = *pos;
#define PUT(ch)                      \
  do {                               \
    if (n + 1 >= cap) return -1;     \
    buf[n++] = (char)(ch);           \
  } while (0)
  PUT('"');
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == '"' || *c == '\\') {
      PUT('\\');
      PUT(*c);
    } else if (*c < 0x20) {
      static const char hex[] = "0123456789abcdef";
      PUT('\\');
      PUT('u');
      PUT('0');
      PUT('0');
      PUT(hex[*c >> 4]);
      PUT(hex[*c & 0xF]);
    } else {
      PUT(*c);
    }
  }
  PUT('"');
#undef PUT
  buf[n] = '\0';
  *pos = n;
  return 0;
}
