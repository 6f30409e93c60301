/*
 * audit.c — the per-node audit log, $KEYTRUSTEE_HOME/logs/audit.log (0600): one JSON line per
 * security-relevant event, hash-chained, written in batches by a background flusher.
 *
 * One chain per node, two writers. keytrusteed (API events) and keytrustee-db (admin-socket
 * events from ktadmin and keytrustee-orgtool) both append to the same file. Each batch is written
 * under an exclusive flock(2) on the file: the flusher locks, reads the last entry to learn its
 * sequence number and hash, appends its entries continuing the chain, fsyncs, and unlocks. So
 * the two processes interleave whole batches and the chain stays single and unbroken.
 *
 * An entry (keys always in this order; values are never secrets — callers pass fingerprints,
 * uuids, org names, handles, codes, addresses):
 *   {"seq":N,"time":"2026-11-28T12:00:00.123Z","program":"keytrusteed","pid":P,
 *    "actor":"...","action":"...","object":"...","result":"...","source":"...",
 *    "prev":"<hex BLAKE2b-256 of the previous entry>","hash":"<hex BLAKE2b-256 of this entry>"}
 * where "hash" covers the line's bytes with the ,"hash":"..." member removed. The first line of
 * a file is seq 0, action "audit.chain_start", prev 64 zeros. kt_audit_verify recomputes every
 * hash and checks every link and sequence number.
 *
 * Durability: kt_audit_record only queues; the flusher writes and fsyncs every
 * KT_AUDIT_FLUSH_MS (and kt_audit_close flushes what is left), so an event can be lost only in a
 * crash of the machine within that window after its request was answered. A batch is one write(2)
 * and one fdatasync; when a quarter of the bound waits, the flusher writes again without pausing.
 *
 * When the file cannot be written (disk full, I/O error): the partial batch is cut off again
 * (ftruncate to the old size, so the chain stays valid), the events stay queued, and the flusher
 * retries. The queue is bounded (KT_AUDIT_BACKLOG events, or $KT_AUDIT_BACKLOG); callers reserve
 * a slot *before* doing anything auditable (kt_audit_reserve), so once the bound is reached new
 * auditable requests are refused instead of performed without a record. While the file is
 * writable a full queue only means the flusher is behind: a reservation then waits for the next
 * batch to be written (at most KT_AUDIT_RESERVE_WAIT_MS) before it is refused. No event is dropped
 * while the process runs; at shutdown, events that still cannot be written are counted in the
 * error log.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "app/common/app.h"
#include "crypto/crypto.h"

#define FIELD_MAX 256u          /* longest value kept per field */
#define TAIL_READ 16384         /* bytes read back to find the last entry */
#define HASH_HEX (2 * KT_HASH_BYTES)
#define HASH_SUFFIX_CHARS (9 + HASH_HEX + 2) /* ,"hash":"<hex>"} */

typedef struct queued_event {
    struct queued_event *next;
    char time[32];
    char actor[FIELD_MAX + 1];
    char action[FIELD_MAX + 1];
    char object[FIELD_MAX + 1];
    char result[FIELD_MAX + 1];
    char source[FIELD_MAX + 1];
} queued_event;

static struct {
    bool open;
    int fd;
    char path[PATH_MAX];
    char program[32];
    pthread_t thread;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    pthread_cond_t drained; /* a batch was written: reservations may go on */
    bool stopping;
    queued_event *head;
    queued_event *tail;
    size_t queued;
    size_t reserved;
    size_t capacity;
    bool failing; /* the last flush failed: logged once until one succeeds */
} audit = {.fd = -1, .mutex = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER,
         .drained = PTHREAD_COND_INITIALIZER};

/* ---- Entries ---------------------------------------------------------------------------------- */

static void format_time(char out[32])
{
    struct timespec now;
    struct tm parts;
    if (clock_gettime(CLOCK_REALTIME, &now) != 0 || gmtime_r(&now.tv_sec, &parts) == NULL) {
        snprintf(out, 32, "unknown");
        return;
    }
    size_t length = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &parts);
    snprintf(out + length, 32 - length, ".%03dZ", (int)(now.tv_nsec / 1000000L) % 1000);
}

static void hash_hex(char out[HASH_HEX + 1], const char *text, size_t length)
{
    unsigned char hash[KT_HASH_BYTES];
    kt_hash(hash, text, length);
    if (kt_hex_encode(out, HASH_HEX + 1, hash, sizeof hash) != 0)
        out[0] = '\0';
    for (char *character = out; *character != '\0'; character++)
        if (*character >= 'A' && *character <= 'F')
            *character = (char)(*character - 'A' + 'a');
}

static int set_text(json_t *object, const char *key, const char *value)
{
    return json_object_set_new(object, key, json_string(value != NULL ? value : ""));
}

/* The members of an entry in their fixed order (one statement each: the order is the format). */
static int fill_entry(json_t *entry, long long sequence, const queued_event *event,
                      const char *previous, pid_t pid)
{
    bool chain_start = sequence == 0 && event->actor[0] == '\0';
    if (json_object_set_new(entry, "seq", json_integer(sequence)) != 0 ||
        set_text(entry, "time", event->time) != 0 ||
        set_text(entry, "program", audit.program) != 0 ||
        json_object_set_new(entry, "pid", json_integer((json_int_t)pid)) != 0)
        return -1;
    if (!chain_start &&
        (set_text(entry, "actor", event->actor) != 0 ||
         set_text(entry, "action", event->action) != 0 ||
         set_text(entry, "object", event->object) != 0 ||
         set_text(entry, "result", event->result) != 0 ||
         set_text(entry, "source", event->source) != 0))
        return -1;
    if (chain_start && set_text(entry, "action", event->action) != 0)
        return -1;
    return set_text(entry, "prev", previous);
}

/* The entry without its hash, as compact JSON (malloc'd), or NULL when memory is short. */
static char *entry_body(long long sequence, const queued_event *event, const char *previous,
                        pid_t pid)
{
    json_t *entry = json_object();
    if (entry == NULL)
        return NULL;
    char *text = fill_entry(entry, sequence, event, previous, pid) == 0
                     ? json_dumps(entry, JSON_COMPACT | JSON_PRESERVE_ORDER)
                     : NULL;
    json_decref(entry);
    return text;
}

/* "<body minus its closing brace>,"hash":"<hex>"}\n" into a malloc'd string; the hash goes to
 * `hash`. */
static char *entry_line(long long sequence, const queued_event *event, const char *previous,
                        pid_t pid, char hash[HASH_HEX + 1])
{
    char *body = entry_body(sequence, event, previous, pid);
    if (body == NULL)
        return NULL;
    size_t length = strlen(body);
    hash_hex(hash, body, length);
    char *line = malloc(length + HASH_SUFFIX_CHARS + 2);
    if (line != NULL)
        snprintf(line, length + HASH_SUFFIX_CHARS + 2, "%.*s,\"hash\":\"%s\"}\n",
                 (int)(length - 1), body, hash);
    free(body);
    return line;
}

/* ---- Parsing an entry (the writer's tail and the verifier) ------------------------------------ */

typedef struct parsed_entry {
    long long sequence;
    char hash[HASH_HEX + 1];
    char previous[HASH_HEX + 1];
    char action[FIELD_MAX + 1];
    bool hash_matches;
} parsed_entry;

static bool is_hash_text(const char *text)
{
    if (text == NULL || strlen(text) != HASH_HEX)
        return false;
    for (const char *character = text; *character != '\0'; character++)
        if (!((*character >= '0' && *character <= '9') || (*character >= 'a' && *character <= 'f')))
            return false;
    return true;
}

/* Parses one line (without its newline). Returns 0, or -1 when it is not an audit entry. */
static int parse_entry(const char *line, size_t length, parsed_entry *entry)
{
    static const char marker[] = ",\"hash\":\"";
    if (length < HASH_SUFFIX_CHARS + 2 ||
        memcmp(line + length - HASH_SUFFIX_CHARS, marker, sizeof marker - 1) != 0)
        return -1;
    json_error_t error;
    json_t *object = json_loadb(line, length, JSON_REJECT_DUPLICATES, &error);
    const char *hash = json_string_value(json_object_get(object, "hash"));
    const char *previous = json_string_value(json_object_get(object, "prev"));
    const char *action = json_string_value(json_object_get(object, "action"));
    json_t *sequence = json_object_get(object, "seq");
    int result = -1;
    if (is_hash_text(hash) && is_hash_text(previous) && action != NULL &&
        strlen(action) <= FIELD_MAX && json_is_integer(sequence)) {
        entry->sequence = (long long)json_integer_value(sequence);
        memcpy(entry->hash, hash, HASH_HEX + 1);
        memcpy(entry->previous, previous, HASH_HEX + 1);
        snprintf(entry->action, sizeof entry->action, "%s", action);
        size_t body_length = length - HASH_SUFFIX_CHARS + 1;
        char *body = malloc(body_length + 1);
        if (body != NULL) {
            memcpy(body, line, body_length - 1);
            body[body_length - 1] = '}';
            body[body_length] = '\0';
            char computed[HASH_HEX + 1];
            hash_hex(computed, body, body_length);
            entry->hash_matches = strcmp(computed, hash) == 0;
            free(body);
            result = 0;
        }
    }
    json_decref(object);
    return result;
}

/* ---- The writer ------------------------------------------------------------------------------- */

typedef struct chain_tail {
    long long sequence; /* of the last entry; -1 for an empty file */
    char hash[HASH_HEX + 1];
    off_t size;
} chain_tail;

/* Reads the last complete entry. A torn last line (a crash mid-write) is cut off and logged. */
static int read_tail(int fd, chain_tail *tail)
{
    struct stat status;
    if (fstat(fd, &status) != 0)
        return -1;
    tail->size = status.st_size;
    tail->sequence = -1;
    memset(tail->hash, '0', HASH_HEX);
    tail->hash[HASH_HEX] = '\0';
    if (status.st_size == 0)
        return 0;
    off_t start = status.st_size > TAIL_READ ? status.st_size - TAIL_READ : 0;
    char buffer[TAIL_READ + 1];
    ssize_t got = pread(fd, buffer, (size_t)(status.st_size - start), start);
    if (got != status.st_size - start)
        return -1;
    size_t end = (size_t)got;
    while (end > 0 && buffer[end - 1] != '\n')
        end--;
    if (end != (size_t)got) {
        kt_log(KT_LOG_WARNING, "%s ends with a torn entry (%zu bytes); cutting it off",
               audit.path, (size_t)got - end);
        if (ftruncate(fd, start + (off_t)end) != 0)
            return -1;
        tail->size = start + (off_t)end;
        if (end == 0 && start == 0)
            return 0;
    }
    size_t line_end = end - 1;
    size_t line_start = line_end;
    while (line_start > 0 && buffer[line_start - 1] != '\n')
        line_start--;
    parsed_entry entry;
    if (parse_entry(buffer + line_start, line_end - line_start, &entry) != 0) {
        errno = EBADMSG;
        return -1;
    }
    tail->sequence = entry.sequence;
    memcpy(tail->hash, entry.hash, HASH_HEX + 1);
    return 0;
}


/* A batch's lines, gathered so that the whole batch is one write(2): one system call per flush
 * instead of one per event, which kept the flusher from falling behind busy request threads. */
typedef struct batch_text {
    char *bytes;
    size_t length;
    size_t size;
} batch_text;

/* Appends one entry continuing the tail to `text`. */
static int append_entry(batch_text *text, chain_tail *tail, const queued_event *event, pid_t pid)
{
    char hash[HASH_HEX + 1];
    char *line = entry_line(tail->sequence + 1, event, tail->hash, pid, hash);
    if (line == NULL) {
        errno = ENOMEM;
        return -1;
    }
    size_t length = strlen(line);
    if (text->length + length > text->size) {
        size_t size = text->size * 2 > text->length + length ? text->size * 2
                                                             : text->length + length + 4096;
        char *grown = realloc(text->bytes, size);
        if (grown == NULL) {
            free(line);
            errno = ENOMEM;
            return -1;
        }
        text->bytes = grown;
        text->size = size;
    }
    memcpy(text->bytes + text->length, line, length);
    text->length += length;
    free(line);
    tail->sequence++;
    memcpy(tail->hash, hash, sizeof hash);
    return 0;
}

/* Writes `events` (and a chain start first when the file is empty) and fsyncs, under the lock.
 * On failure the file is cut back to its old size. */
static int write_batch(const queued_event *events)
{
    if (flock(audit.fd, LOCK_EX) != 0)
        return -1;
    chain_tail tail;
    batch_text text = {0};
    pid_t pid = getpid(); /* read per batch: the daemons detach (and change pid) after opening */
    int result = read_tail(audit.fd, &tail);
    off_t old_size = tail.size;
    if (result == 0 && tail.sequence < 0) {
        queued_event start = {.action = "audit.chain_start"};
        format_time(start.time);
        result = append_entry(&text, &tail, &start, pid);
    }
    for (const queued_event *event = events; result == 0 && event != NULL; event = event->next)
        result = append_entry(&text, &tail, event, pid);
    if (result == 0)
        result = kt_write_all(audit.fd, text.bytes, text.length);
    if (result == 0)
        result = fdatasync(audit.fd);
    int saved = errno;
    free(text.bytes);
    if (result != 0 && saved != EBADMSG && ftruncate(audit.fd, old_size) != 0)
        kt_log(KT_LOG_ERROR, "cannot cut a failed batch off %s: %s", audit.path, strerror(errno));
    (void)flock(audit.fd, LOCK_UN);
    errno = saved;
    return result;
}

static void free_events(queued_event *events)
{
    while (events != NULL) {
        queued_event *next = events->next;
        free(events);
        events = next;
    }
}

static void log_flush_failure(int saved, size_t backlog)
{
    kt_log(KT_LOG_ERROR,
           "cannot append to the audit log %s: %s; %zu events wait in memory and auditable "
           "requests are refused once %zu wait",
           audit.path,
           saved == EBADMSG ? "its last entry is not an audit entry (run ktadmin audit verify)"
                            : strerror(saved),
           backlog, audit.capacity);
}

/* Takes the whole queue, writes it, and puts it back in front when the write failed. The events
 * still count against the bound while they are out. */
static void flush_queue(void)
{
    (void)pthread_mutex_lock(&audit.mutex);
    queued_event *events = audit.head;
    queued_event *last = audit.tail;
    size_t count = 0;
    for (queued_event *event = events; event != NULL; event = event->next)
        count++;
    audit.head = NULL;
    audit.tail = NULL;
    (void)pthread_mutex_unlock(&audit.mutex);
    if (events == NULL)
        return;
    int result = write_batch(events);
    int saved = errno;
    (void)pthread_mutex_lock(&audit.mutex);
    if (result == 0) {
        audit.queued -= count;
        (void)pthread_cond_broadcast(&audit.drained);
    } else {
        last->next = audit.head;
        audit.head = events;
        if (audit.tail == NULL)
            audit.tail = last;
    }
    bool was_failing = audit.failing;
    audit.failing = result != 0;
    size_t backlog = audit.queued;
    (void)pthread_mutex_unlock(&audit.mutex);
    if (result == 0) {
        free_events(events);
        if (was_failing)
            kt_log(KT_LOG_INFO, "the audit log %s is writable again", audit.path);
    } else if (!was_failing) {
        log_flush_failure(saved, backlog);
    }
}

/* A quarter of the bound waits (and the last flush worked): write it now, not after the pause,
 * so that a burst of requests does not reach the bound while the flusher sleeps. Under the mutex. */
static bool queue_is_large(void)
{
    return audit.head != NULL && !audit.failing && audit.queued >= audit.capacity / 4;
}

static void *flusher(void *unused)
{
    (void)unused;
    for (;;) {
        (void)pthread_mutex_lock(&audit.mutex);
        if (!audit.stopping && !queue_is_large()) {
            struct timespec deadline;
            (void)clock_gettime(CLOCK_REALTIME, &deadline);
            deadline.tv_nsec += KT_AUDIT_FLUSH_MS * 1000000L;
            deadline.tv_sec += deadline.tv_nsec / 1000000000L;
            deadline.tv_nsec %= 1000000000L;
            (void)pthread_cond_timedwait(&audit.wake, &audit.mutex, &deadline);
        }
        bool stopping = audit.stopping;
        (void)pthread_mutex_unlock(&audit.mutex);
        flush_queue();
        if (stopping)
            return NULL;
    }
}

/* ---- The interface ---------------------------------------------------------------------------- */

static size_t backlog_capacity(void)
{
    const char *text = getenv("KT_AUDIT_BACKLOG");
    char *end = NULL;
    long value = text != NULL ? strtol(text, &end, 10) : 0;
    if (text != NULL && end != text && *end == '\0' && value > 0)
        return (size_t)value;
    return KT_AUDIT_BACKLOG;
}

int kt_audit_open(const kt_paths *paths, const char *program, char *error, size_t error_size)
{
    if (kt_private_directory(paths->logdir, error, error_size) != 0 ||
        kt_path_join(audit.path, sizeof audit.path, paths->logdir, KT_AUDIT_FILE) != 0) {
        if (error[0] == '\0')
            snprintf(error, error_size, "the audit log path is too long");
        return -1;
    }
    audit.fd = open(audit.path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    struct stat status;
    if (audit.fd < 0 || fstat(audit.fd, &status) != 0) {
        snprintf(error, error_size, "cannot open the audit log %s: %s", audit.path,
                 strerror(errno));
        return -1;
    }
    if ((status.st_mode & 077) != 0) {
        snprintf(error, error_size, "the audit log %s is readable by others; run: chmod 600 %s",
                 audit.path, audit.path);
        (void)close(audit.fd);
        audit.fd = -1;
        return -1;
    }
    snprintf(audit.program, sizeof audit.program, "%s", program);
    audit.capacity = backlog_capacity();
    audit.stopping = false;
    if (pthread_create(&audit.thread, NULL, flusher, NULL) != 0) {
        snprintf(error, error_size, "cannot start the audit flusher thread");
        (void)close(audit.fd);
        audit.fd = -1;
        return -1;
    }
    audit.open = true;
    return 0;
}

bool kt_audit_reserve(void)
{
    if (!audit.open)
        return true;
    (void)pthread_mutex_lock(&audit.mutex);
    bool granted = audit.queued + audit.reserved < audit.capacity;
    /* At the bound while the file is writable and events wait, the flusher is only behind
     * (request threads busy on every core starve it): wait for it rather than refuse, which also
     * leaves it the CPU. Reservations alone are not the flusher's to drain: no wait for those. */
    if (!granted && !audit.failing && !audit.stopping && audit.queued > 0) {
        struct timespec deadline;
        (void)clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += KT_AUDIT_RESERVE_WAIT_MS / 1000L;
        deadline.tv_nsec += (KT_AUDIT_RESERVE_WAIT_MS % 1000L) * 1000000L;
        deadline.tv_sec += deadline.tv_nsec / 1000000000L;
        deadline.tv_nsec %= 1000000000L;
        while (!granted && !audit.failing && !audit.stopping && audit.queued > 0 &&
               pthread_cond_timedwait(&audit.drained, &audit.mutex, &deadline) == 0)
            granted = audit.queued + audit.reserved < audit.capacity;
        granted = audit.queued + audit.reserved < audit.capacity;
    }
    if (granted)
        audit.reserved++;
    (void)pthread_mutex_unlock(&audit.mutex);
    return granted;
}

void kt_audit_release(void)
{
    if (!audit.open)
        return;
    (void)pthread_mutex_lock(&audit.mutex);
    if (audit.reserved > 0)
        audit.reserved--;
    (void)pthread_mutex_unlock(&audit.mutex);
}

static void copy_field(char out[FIELD_MAX + 1], const char *value)
{
    snprintf(out, FIELD_MAX + 1, "%s", value != NULL && value[0] != '\0' ? value : "-");
}

void kt_audit_record(const kt_audit_event *event)
{
    if (!audit.open)
        return;
    queued_event *queued = calloc(1, sizeof *queued);
    if (queued == NULL) {
        kt_log(KT_LOG_ERROR, "out of memory: audit event %s by %s on %s (%s) not recorded",
               event->action, event->actor, event->object, event->result);
        kt_audit_release();
        return;
    }
    format_time(queued->time);
    copy_field(queued->actor, event->actor);
    copy_field(queued->action, event->action);
    copy_field(queued->object, event->object);
    copy_field(queued->result, event->result);
    copy_field(queued->source, event->source);
    (void)pthread_mutex_lock(&audit.mutex);
    if (audit.reserved > 0)
        audit.reserved--;
    if (audit.tail != NULL)
        audit.tail->next = queued;
    else
        audit.head = queued;
    audit.tail = queued;
    audit.queued++;
    if (audit.queued == audit.capacity / 4)
        (void)pthread_cond_signal(&audit.wake); /* queue_is_large: the flusher need not wait */
    (void)pthread_mutex_unlock(&audit.mutex);
}

void kt_audit_close(void)
{
    if (!audit.open)
        return;
    (void)pthread_mutex_lock(&audit.mutex);
    audit.stopping = true;
    (void)pthread_cond_signal(&audit.wake);
    (void)pthread_cond_broadcast(&audit.drained);
    (void)pthread_mutex_unlock(&audit.mutex);
    (void)pthread_join(audit.thread, NULL);
    if (audit.queued > 0)
        kt_log(KT_LOG_ERROR, "%zu audit events could not be written to %s before exiting",
               audit.queued, audit.path);
    free_events(audit.head);
    audit.head = NULL;
    audit.tail = NULL;
    audit.queued = 0;
    (void)close(audit.fd);
    audit.fd = -1;
    audit.open = false;
}

/* ---- Verification ----------------------------------------------------------------------------- */

/* Checks one entry against the one before; a sentence in `message` when it does not follow. */
static int check_link(long line_number, const parsed_entry *entry, const parsed_entry *previous,
                      char *message, size_t message_size)
{
    if (!entry->hash_matches) {
        snprintf(message, message_size, "line %ld: modified (its hash does not match its content)",
                 line_number);
        return -1;
    }
    if (previous == NULL) {
        if (entry->sequence != 0 || strcmp(entry->action, "audit.chain_start") != 0) {
            snprintf(message, message_size, "line 1: not the chain start (entries before it were "
                     "removed)");
            return -1;
        }
        return 0;
    }
    if (entry->sequence != previous->sequence + 1) {
        snprintf(message, message_size, "line %ld: sequence %lld follows %lld (%s)", line_number,
                 entry->sequence, previous->sequence,
                 entry->sequence > previous->sequence + 1 ? "entries were removed before it"
                                                          : "entries were reordered or inserted");
        return -1;
    }
    if (strcmp(entry->previous, previous->hash) != 0) {
        snprintf(message, message_size, "line %ld: does not chain to line %ld (line %ld was "
                 "modified, or an entry was replaced)", line_number, line_number - 1,
                 line_number - 1);
        return -1;
    }
    return 0;
}

int kt_audit_verify(const char *path, long *entries, char *head, size_t head_size,
                    char *message, size_t message_size)
{
    FILE *file = fopen(path, "re");
    if (file == NULL) {
        snprintf(message, message_size, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t capacity = 0;
    ssize_t length;
    long line_number = 0;
    parsed_entry previous;
    int result = 0;
    while (result == 0 && (length = getline(&line, &capacity, file)) >= 0) {
        line_number++;
        parsed_entry entry;
        if (length == 0 || line[length - 1] != '\n') {
            snprintf(message, message_size, "line %ld: torn (no newline at the end)", line_number);
            result = -1;
        } else if (parse_entry(line, (size_t)length - 1, &entry) != 0) {
            snprintf(message, message_size, "line %ld: not an audit entry", line_number);
            result = -1;
        } else {
            result = check_link(line_number, &entry, line_number > 1 ? &previous : NULL,
                                message, message_size);
            previous = entry;
        }
    }
    bool read_failed = ferror(file) != 0;
    free(line);
    (void)fclose(file);
    if (result == 0 && read_failed) {
        snprintf(message, message_size, "cannot read %s", path);
        result = -1;
    }
    if (result == 0 && line_number == 0) {
        snprintf(message, message_size, "%s is empty", path);
        result = -1;
    }
    *entries = line_number;
    if (result == 0)
        snprintf(head, head_size, "seq %lld hash %s", previous.sequence, previous.hash);
    return result;
}
