// SPDX-License-Identifier: Apache-2.0
// A strict JSON reader (RFC 8259) for the network configuration a container runtime streams to
// weft-cni. It validates the whole document and keeps, for every value, the byte span it came from:
// the plugin must hand `prevResult` back to the runtime byte for byte, which re-serialising through a
// JSON library would not do. Nothing is copied; lookups decode on demand into caller buffers.
#ifndef WEFT_CNI_JSON_H
#define WEFT_CNI_JSON_H

#include <stddef.h>
#include <stdint.h>

enum json_type { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

/* One value (or object key) in document order. An object's children are key, value, key, value…;
 * `next` is the index just past this token's subtree, so siblings are walked without recursion. */
struct json_token {
  enum json_type type;
  size_t start, end; /* [start, end) in the text; strings include their quotes */
  int count;         /* array: elements; object: members (key/value pairs) */
  int next;
};

#define JSON_MAX_DEPTH 64
#define JSON_MAX_TOKENS 65536

struct json_doc {
  const char *text;
  size_t len;
  struct json_token *tok;
  int ntok, cap;
  char error[160]; /* why parsing failed, with the byte offset */
};

/* Parse and validate `text` (not NUL-terminated). 0 on success; -1 with doc->error set. The document
 * must be exactly one value surrounded by optional whitespace. Free with json_free. */
int json_parse(struct json_doc *doc, const char *text, size_t len);
void json_free(struct json_doc *doc);

/* The value of member `key` of object token `obj`, or -1 (absent, or `obj` is not an object). With a
 * duplicated key the last one counts, as in the runtime's own decoder (Go's encoding/json). */
int json_get(const struct json_doc *doc, int obj, const char *key);

/* Element `i` of array token `arr`, or -1. */
int json_at(const struct json_doc *doc, int arr, int i);

/* Decode string token `t` into `out` (UTF-8, NUL-terminated). Returns the length, or -1 when `t` is
 * not a string, does not fit in `cap` bytes, or contains U+0000 (no C string can hold it). */
int json_string(const struct json_doc *doc, int t, char *out, size_t cap);

/* Number token `t` as an integer in [min, max]: 0 on success, -1 when it is not a number, has a
 * fraction or exponent, or is out of range. */
int json_int(const struct json_doc *doc, int t, int64_t min, int64_t max, int64_t *out);

/* Write `s` as a JSON string literal (quotes included) into buf at *pos, never past cap - 1.
 * Returns -1 when it does not fit. Bytes >= 0x80 are copied as they are (callers pass UTF-8). */
int json_put_string(char *buf, size_t cap, size_t *pos, const char *s);

#endif
