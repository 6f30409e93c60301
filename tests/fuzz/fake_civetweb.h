/*
 * fake_civetweb.h — just enough of CivetWeb's API for keytrusteed's request handling to run
 * inside a fuzz target, without sockets or TLS (tests/fuzz/fake_civetweb.c).
 *
 * CivetWeb itself is third-party code and is not what we fuzz; what we fuzz is everything
 * keytrusteed does with the request CivetWeb hands it. A fake_request is filled the way CivetWeb
 * fills struct mg_request_info (method, raw path, query, headers) plus the body bytes mg_read
 * returns; the fake records the answer (status, headers, body) so the target can check it.
 */
#ifndef KT_FAKE_CIVETWEB_H
#define KT_FAKE_CIVETWEB_H

#include <stdbool.h>
#include <stddef.h>

#include <civetweb.h>

#define FAKE_HEADERS_MAX 64    /* CivetWeb's MG_MAX_HEADERS */
#define FAKE_ANSWER_HEADERS 16

struct mg_connection {
    struct mg_request_info info;
    const unsigned char *body;   /* what the client sends after the headers */
    size_t body_length;
    size_t body_read;
    /* The answer. */
    int starts;                  /* mg_response_header_start calls */
    int status;
    bool headers_sent;
    size_t header_count;
    char header_names[FAKE_ANSWER_HEADERS][64];
    char header_values[FAKE_ANSWER_HEADERS][256];
    unsigned char *written;      /* body bytes given to mg_write (malloc'd) */
    size_t written_length;
};

/* Starts a request; the strings must outlive it. */
void fake_request_init(struct mg_connection *connection, void *user_data, const char *method,
                       const char *path, const char *query, const unsigned char *body,
                       size_t body_length);
/* Adds a request header (ignored past FAKE_HEADERS_MAX, as CivetWeb refuses the request). */
void fake_request_header(struct mg_connection *connection, const char *name, const char *value);
/* The value of an answer header, or NULL. */
const char *fake_answer_header(const struct mg_connection *connection, const char *name);
/* Frees what the answer allocated. */
void fake_request_clear(struct mg_connection *connection);

#endif /* KT_FAKE_CIVETWEB_H */
