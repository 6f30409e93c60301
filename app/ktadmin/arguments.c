/*
 * arguments.c — checks of the values operators type into ktadmin: ports, host names, addresses
 * and HOST[:PORT] pairs. Each check is strict (no trailing junk, no silent truncation) so that a
 * typo is caught on the command line rather than when a service fails to start later.
 */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "app/ktadmin/ktadmin.h"

#define DNS_NAME_MAX  253u
#define DNS_LABEL_MAX 63u

int ktadmin_parse_port(const char *text, long *port)
{
    if (text == NULL || text[0] == '\0' || strlen(text) > 5)
        return -1;
    for (const char *cursor = text; *cursor != '\0'; cursor++) {
        if (!isdigit((unsigned char)*cursor))
            return -1;
    }
    long value = strtol(text, NULL, 10);
    if (value < 1 || value > 65535)
        return -1;
    *port = value;
    return 0;
}

bool ktadmin_ip_literal(const char *text)
{
    unsigned char address[16];
    return inet_pton(AF_INET, text, address) == 1 || inet_pton(AF_INET6, text, address) == 1;
}

static bool label_valid(const char *label, size_t length)
{
    if (length == 0 || length > DNS_LABEL_MAX)
        return false;
    if (label[0] == '-' || label[length - 1] == '-')
        return false;
    for (size_t index = 0; index < length; index++) {
        unsigned char character = (unsigned char)label[index];
        if (!isalnum(character) && character != '-')
            return false;
    }
    return true;
}

static bool dns_name_valid(const char *text)
{
    size_t length = strlen(text);
    if (length == 0 || length > DNS_NAME_MAX)
        return false;
    const char *label = text;
    for (;;) {
        const char *dot = strchr(label, '.');
        size_t label_length = dot == NULL ? strlen(label) : (size_t)(dot - label);
        if (!label_valid(label, label_length))
            return false;
        if (dot == NULL)
            return true;
        label = dot + 1;
    }
}

bool ktadmin_host_valid(const char *text)
{
    return ktadmin_ip_literal(text) || dns_name_valid(text);
}

static int copy_host(char host[KTADMIN_HOST_MAX], const char *start, size_t length,
                     const char *text, char *error, size_t error_size)
{
    if (length == 0 || length >= KTADMIN_HOST_MAX) {
        snprintf(error, error_size, "'%s' has %s host name", text,
                 length == 0 ? "an empty" : "too long a");
        return -1;
    }
    memcpy(host, start, length);
    host[length] = '\0';
    return 0;
}

/* "[v6]" or "[v6]:port". */
static int split_bracketed(const char *text, char host[KTADMIN_HOST_MAX], long *port,
                           char *error, size_t error_size)
{
    const char *close = strchr(text, ']');
    if (close == NULL || (close[1] != '\0' && close[1] != ':')) {
        snprintf(error, error_size, "'%s' is not of the form [IPV6] or [IPV6]:PORT", text);
        return -1;
    }
    if (copy_host(host, text + 1, (size_t)(close - text - 1), text, error, error_size) != 0)
        return -1;
    if (inet_pton(AF_INET6, host, (unsigned char[16]){0}) != 1) {
        snprintf(error, error_size, "'%s' is not an IPv6 address", host);
        return -1;
    }
    if (close[1] == ':' && ktadmin_parse_port(close + 2, port) != 0) {
        snprintf(error, error_size, "'%s' has a bad port: use a number from 1 to 65535", text);
        return -1;
    }
    return 0;
}

int ktadmin_split_address(const char *text, char host[KTADMIN_HOST_MAX], long *port,
                          char *error, size_t error_size)
{
    *port = 0;
    if (text[0] == '[')
        return split_bracketed(text, host, port, error, error_size);
    const char *colon = strchr(text, ':');
    if (colon != NULL && strchr(colon + 1, ':') != NULL) {
        /* Several colons: a bare IPv6 address, which cannot carry a port. */
        if (copy_host(host, text, strlen(text), text, error, error_size) != 0)
            return -1;
    } else {
        size_t host_length = colon == NULL ? strlen(text) : (size_t)(colon - text);
        if (copy_host(host, text, host_length, text, error, error_size) != 0)
            return -1;
        if (colon != NULL && ktadmin_parse_port(colon + 1, port) != 0) {
            snprintf(error, error_size, "'%s' has a bad port: use a number from 1 to 65535",
                     text);
            return -1;
        }
    }
    if (!ktadmin_host_valid(host)) {
        snprintf(error, error_size,
                 "'%s' is neither a host name (letters, digits, '-' and '.') nor an IP address",
                 host);
        return -1;
    }
    return 0;
}

int ktadmin_local_hostname(char host[KTADMIN_HOST_MAX], char *error, size_t error_size)
{
    if (gethostname(host, KTADMIN_HOST_MAX) != 0) {
        snprintf(error, error_size, "cannot read this machine's host name (%s); pass "
                 "--external-address HOST", strerror(errno));
        return -1;
    }
    host[KTADMIN_HOST_MAX - 1] = '\0';
    if (!ktadmin_host_valid(host)) {
        snprintf(error, error_size, "this machine's host name '%s' is not a valid DNS name; pass "
                 "--external-address HOST", host);
        return -1;
    }
    return 0;
}

/* Whether a literal address belongs to one of this machine's interfaces. When the interfaces
 * cannot be listed the answer is "yes", which keeps the operator's configuration as it is. */
static bool address_is_local(const char *text)
{
    unsigned char wanted[16];
    int family = inet_pton(AF_INET, text, wanted) == 1 ? AF_INET : AF_INET6;
    if (family == AF_INET6 && inet_pton(AF_INET6, text, wanted) != 1)
        return false;
    struct ifaddrs *interfaces = NULL;
    if (getifaddrs(&interfaces) != 0)
        return true;
    bool found = false;
    for (struct ifaddrs *entry = interfaces; entry != NULL && !found; entry = entry->ifa_next) {
        if (entry->ifa_addr == NULL || entry->ifa_addr->sa_family != family)
            continue;
        if (family == AF_INET) {
            const struct sockaddr_in *address = (const struct sockaddr_in *)entry->ifa_addr;
            found = memcmp(&address->sin_addr, wanted, 4) == 0;
        } else {
            const struct sockaddr_in6 *address = (const struct sockaddr_in6 *)entry->ifa_addr;
            found = memcmp(&address->sin6_addr, wanted, 16) == 0;
        }
    }
    freeifaddrs(interfaces);
    return found;
}

static size_t first_label_length(const char *name)
{
    const char *dot = strchr(name, '.');
    return dot == NULL ? strlen(name) : (size_t)(dot - name);
}

bool ktadmin_host_is_local(const char *host, const char *local_host)
{
    if (strcasecmp(host, "localhost") == 0)
        return true;
    if (ktadmin_ip_literal(host))
        return address_is_local(host);
    size_t length = first_label_length(host);
    return length == first_label_length(local_host) && strncasecmp(host, local_host, length) == 0;
}
