/*
 * authority.c — which server a signed request was meant for (docs/api.md "Request signing",
 * docs/security.md "Replay across nodes").
 *
 * A client signs the authority it addressed — host[:port] exactly as it sent it in the Host
 * header — along with the method, target, time, nonce and body. Each node keeps its own nonce
 * cache, so without this line a request captured on its way to node A could be replayed once
 * against node B. Here the node decides whether the Host header names it: the header is put in a
 * canonical form (lowercase host; IPv6 address in brackets, as inet_ntop writes it; explicit
 * port) and compared with the node's own names, canonicalised the same way at start-up:
 *
 *   external_address  (keytrustee.conf, set by `ktadmin init --external-address`)
 *   listen            the bind address, unless it is the wildcard 0.0.0.0 or ::
 *   the host name     gethostname(), as the system reports it
 *   accepted_hosts    (keytrustee.conf) further names separated by blanks or commas, for a node
 *                     reached under another name: a load balancer, NAT, a DNS alias
 *
 * Port defaults differ on purpose. In the Host header a missing port means 443, the https default
 * an HTTP client (curl, a browser) assumes. In keytrustee.conf a name without a port means this
 * node's own `port` (11371 by default), as ktclient assumes for a URL without one. So a load
 * balancer answering on 443 for this node is listed as `accepted_hosts = kt.example.com:443`.
 *
 * The names are fixed at start-up; the table is read-only afterwards, so worker threads read it
 * without a lock.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/keytrusteed/keytrusteed.h"

#define NAME_SEPARATORS " \t,"

static bool is_name_character(char character)
{
    return isalnum((unsigned char)character) || character == '-' || character == '.' ||
           character == '_';
}

/* Writes "[canonical IPv6]" for the `length` bytes at `text`; -1 when they are not IPv6. */
static int canonical_ipv6(const char *text, size_t length, char *out, size_t out_size)
{
    char address_text[INET6_ADDRSTRLEN];
    unsigned char binary[sizeof(struct in6_addr)];
    if (length == 0 || length >= sizeof address_text)
        return -1;
    memcpy(address_text, text, length);
    address_text[length] = '\0';
    if (inet_pton(AF_INET6, address_text, binary) != 1 ||
        inet_ntop(AF_INET6, binary, address_text, sizeof address_text) == NULL)
        return -1;
    int written = snprintf(out, out_size, "[%s]", address_text);
    return written < 0 || (size_t)written >= out_size ? -1 : 0;
}

/* Lowercases a DNS name or IPv4 address of `length` bytes into out; -1 when it is not one. */
static int canonical_name(const char *text, size_t length, char *out, size_t out_size)
{
    if (length == 0 || length >= out_size || text[0] == '-' || text[0] == '.')
        return -1;
    for (size_t index = 0; index < length; index++) {
        if (!is_name_character(text[index]))
            return -1;
        out[index] = (char)tolower((unsigned char)text[index]);
    }
    out[length] = '\0';
    return 0;
}

/* The port after ':' (1 to 5 digits, 1..65535), or -1. */
static long parse_port(const char *text)
{
    size_t digits = strspn(text, "0123456789");
    if (digits == 0 || digits > 5 || text[digits] != '\0')
        return -1;
    long port = strtol(text, NULL, 10);
    return port >= 1 && port <= 65535 ? port : -1;
}

int ktd_authority_canonical(const char *text, long default_port, char *out, size_t out_size)
{
    char host[KTD_AUTHORITY_MAX];
    const char *after_host;
    if (text == NULL)
        return -1;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL ||
            canonical_ipv6(text + 1, (size_t)(close - text - 1), host, sizeof host) != 0)
            return -1;
        after_host = close + 1;
    } else {
        size_t length = strcspn(text, ":");
        if (canonical_name(text, length, host, sizeof host) != 0)
            return -1;
        after_host = text + length;
    }
    long port = default_port;
    if (*after_host == ':')
        port = parse_port(after_host + 1);
    else if (*after_host != '\0')
        return -1;
    if (port < 1)
        return -1;
    int written = snprintf(out, out_size, "%s:%ld", host, port);
    return written < 0 || (size_t)written >= out_size ? -1 : 0;
}

/* ---- The node's own names ------------------------------------------------------------------- */

static int add_name(ktd_daemon *daemon, const char *text, const char *origin, char *error,
                    size_t error_size)
{
    char canonical[KTD_AUTHORITY_MAX];
    if (ktd_authority_canonical(text, daemon->port, canonical, sizeof canonical) != 0) {
        snprintf(error, error_size, "%s '%.80s' in %s is not HOST[:PORT] (a DNS name, an IPv4 "
                 "address or a bracketed IPv6 address, and a port from 1 to 65535)", origin,
                 text, KT_CONF_FILE);
        return -1;
    }
    for (size_t index = 0; index < daemon->name_count; index++)
        if (strcmp(daemon->names[index], canonical) == 0)
            return 0;
    if (daemon->name_count == KTD_NAMES_MAX) {
        snprintf(error, error_size, "this node has more than %d names (external_address, listen, "
                 "host name and accepted_hosts in %s); list fewer accepted_hosts",
                 KTD_NAMES_MAX, KT_CONF_FILE);
        return -1;
    }
    memcpy(daemon->names[daemon->name_count++], canonical, strlen(canonical) + 1);
    return 0;
}

static int add_listen_address(ktd_daemon *daemon, char *error, size_t error_size)
{
    char text[KTD_AUTHORITY_MAX];
    const char *address = daemon->listen_address;
    if (strcmp(address, "0.0.0.0") == 0 || strcmp(address, "::") == 0)
        return 0; /* every address: the operator names the node in external_address */
    int written = snprintf(text, sizeof text, strchr(address, ':') != NULL ? "[%s]" : "%s",
                           address);
    if (written < 0 || (size_t)written >= sizeof text)
        return -1;
    return add_name(daemon, text, "listen", error, error_size);
}

static int add_host_name(ktd_daemon *daemon, char *error, size_t error_size)
{
    char name[256];
    if (gethostname(name, sizeof name) != 0)
        return 0; /* no host name: the configured names still apply */
    name[sizeof name - 1] = '\0';
    char canonical[KTD_AUTHORITY_MAX];
    if (ktd_authority_canonical(name, daemon->port, canonical, sizeof canonical) != 0)
        return 0; /* a host name that is no DNS name cannot appear in a Host header */
    return add_name(daemon, name, "the host name", error, error_size);
}

static int add_accepted_hosts(ktd_daemon *daemon, const char *list, char *error,
                              size_t error_size)
{
    char *copy = strdup(list);
    if (copy == NULL) {
        snprintf(error, error_size, "out of memory reading accepted_hosts");
        return -1;
    }
    int result = 0;
    char *position = NULL;
    for (char *name = strtok_r(copy, NAME_SEPARATORS, &position); name != NULL && result == 0;
         name = strtok_r(NULL, NAME_SEPARATORS, &position))
        result = add_name(daemon, name, "accepted_hosts entry", error, error_size);
    free(copy);
    return result;
}

int ktd_names_load(ktd_daemon *daemon, const char *external_address, const char *accepted_hosts,
                   char *error, size_t error_size)
{
    daemon->name_count = 0;
    if (external_address[0] != '\0' &&
        add_name(daemon, external_address, "external_address", error, error_size) != 0)
        return -1;
    if (add_listen_address(daemon, error, error_size) != 0 ||
        add_host_name(daemon, error, error_size) != 0 ||
        add_accepted_hosts(daemon, accepted_hosts, error, error_size) != 0)
        return -1;
    return 0;
}

bool ktd_authority_is_ours(const ktd_daemon *daemon, const char *canonical)
{
    for (size_t index = 0; index < daemon->name_count; index++)
        if (strcmp(daemon->names[index], canonical) == 0)
            return true;
    return false;
}
