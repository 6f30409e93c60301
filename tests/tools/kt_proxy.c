/*
 * kt_proxy — a TCP proxy the fault tests control, standing on the replication link between the
 * passive and the active so a test can partition them without touching either process.
 *
 *   kt_proxy LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT CONTROL_FIFO
 *
 * Every accepted connection is paired with a new connection to the target; bytes are forwarded
 * both ways. Commands, one per line, are read from CONTROL_FIFO (the test writes them with echo):
 *
 *   pass            forward everything (the initial mode)
 *   drop            a full partition: keep the connections open but discard every byte both ways,
 *                   and accept new connections without ever forwarding (packets vanish, nothing
 *                   is reset — what a pulled cable looks like to TCP)
 *   drop-forward    one-way partition: discard client→target bytes only
 *   drop-backward   one-way partition: discard target→client bytes only
 *   cut             close every connection now, and refuse new ones (connection reset)
 *   delay MS        forward every byte both ways MS milliseconds late, in order (a slow link);
 *                   "pass" ends it (what is already queued still arrives, in order)
 *   corrupt         flip one bit in the next chunk forwarded client→target, then pass again
 *   corrupt-backward  the same for the next chunk forwarded target→client
 *
 * Single-threaded around poll(2): the state is the mode and the list of pairs, changed in one
 * place (apply_command). Delayed bytes wait in a queue per pair and direction (struct chunk);
 * a direction with bytes queued queues what follows too, so nothing overtakes. It stops by itself on SIGTERM or when the FIFO's writer sends "quit".
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAIRS 64

enum mode { MODE_PASS, MODE_DROP, MODE_DROP_FORWARD, MODE_DROP_BACKWARD, MODE_CUT, MODE_DELAY };

/* Bytes read from one side, to be written to the other at `due` (milliseconds, monotonic). */
struct chunk {
    struct chunk *next;
    long long due;
    size_t length;
    char data[];
};

struct queue {
    struct chunk *head, *tail;
};

struct pair {
    int client; /* accepted: the passive's side */
    int target; /* dialled: the active's side */
    struct queue queued[2]; /* [1]: client→target, [0]: target→client */
};

static struct pair pairs[MAX_PAIRS];
static int pair_count;
static enum mode mode = MODE_PASS;
static bool corrupt_next;
static bool corrupt_next_backward;
static long long delay_ms;
static volatile sig_atomic_t stopping;

static void on_signal(int signal_number)
{
    (void)signal_number;
    stopping = 1;
}

static int open_socket(const char *host, const char *port, bool listening)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *result = NULL;
    if (listening)
        hints.ai_flags = AI_PASSIVE;
    if (getaddrinfo(host, port, &hints, &result) != 0 || result == NULL)
        return -1;
    int fd = socket(result->ai_family, result->ai_socktype | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        int one = 1;
        int status;
        if (listening) {
            (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            status = bind(fd, result->ai_addr, result->ai_addrlen);
            if (status == 0)
                status = listen(fd, 16);
        } else {
            status = connect(fd, result->ai_addr, result->ai_addrlen);
        }
        if (status != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(result);
    return fd;
}

static long long now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static void queue_free(struct queue *queue)
{
    while (queue->head != NULL) {
        struct chunk *next = queue->head->next;
        free(queue->head);
        queue->head = next;
    }
    queue->tail = NULL;
}

static void close_pair(int index)
{
    close(pairs[index].client);
    close(pairs[index].target);
    queue_free(&pairs[index].queued[0]);
    queue_free(&pairs[index].queued[1]);
    pairs[index] = pairs[--pair_count];
}

static void close_all_pairs(void)
{
    while (pair_count > 0)
        close_pair(pair_count - 1);
}

/* The one place the proxy's state changes. Returns false on "quit". */
static bool apply_command(const char *command)
{
    if (strcmp(command, "pass") == 0)
        mode = MODE_PASS;
    else if (strcmp(command, "drop") == 0)
        mode = MODE_DROP;
    else if (strcmp(command, "drop-forward") == 0)
        mode = MODE_DROP_FORWARD;
    else if (strcmp(command, "drop-backward") == 0)
        mode = MODE_DROP_BACKWARD;
    else if (strcmp(command, "cut") == 0) {
        mode = MODE_CUT;
        close_all_pairs();
    } else if (strncmp(command, "delay ", 6) == 0 && atoll(command + 6) > 0) {
        mode = MODE_DELAY;
        delay_ms = atoll(command + 6);
    } else if (strcmp(command, "corrupt") == 0)
        corrupt_next = true;
    else if (strcmp(command, "corrupt-backward") == 0)
        corrupt_next_backward = true;
    else if (strcmp(command, "quit") == 0)
        return false;
    else if (command[0] != '\0')
        fprintf(stderr, "kt_proxy: unknown command '%s'\n", command);
    fprintf(stderr, "kt_proxy: %s\n", command);
    return true;
}

static bool read_commands(int fifo)
{
    static char line[256];
    static size_t used;
    char chunk[128];
    ssize_t count = read(fifo, chunk, sizeof chunk);
    if (count <= 0)
        return true;
    for (ssize_t i = 0; i < count; i++) {
        if (chunk[i] == '\n') {
            line[used] = '\0';
            used = 0;
            if (!apply_command(line))
                return false;
        } else if (used + 1 < sizeof line) {
            line[used++] = chunk[i];
        }
    }
    return true;
}

static bool write_all(int fd, const char *data, size_t length)
{
    while (length > 0) {
        ssize_t written = write(fd, data, length);
        if (written < 0 && errno == EINTR)
            continue;
        if (written <= 0)
            return false;
        data += written;
        length -= (size_t)written;
    }
    return true;
}

/* Queues a copy of `data` to go out at `due`; false when out of memory. */
static bool enqueue(struct queue *queue, const char *data, size_t length, long long due)
{
    struct chunk *chunk = malloc(sizeof *chunk + length);
    if (chunk == NULL)
        return false;
    chunk->next = NULL;
    chunk->due = due;
    chunk->length = length;
    memcpy(chunk->data, data, length);
    if (queue->tail != NULL)
        queue->tail->next = chunk;
    else
        queue->head = chunk;
    queue->tail = chunk;
    return true;
}

/* Writes the queued chunks that are due; false when the pair should close. */
static bool flush_due(struct queue *queue, int to, long long now)
{
    while (queue->head != NULL && queue->head->due <= now) {
        struct chunk *chunk = queue->head;
        bool written = write_all(to, chunk->data, chunk->length);
        queue->head = chunk->next;
        if (queue->head == NULL)
            queue->tail = NULL;
        free(chunk);
        if (!written)
            return false;
    }
    return true;
}

/* Milliseconds until the earliest queued chunk is due, at most `longest`. */
static int next_due_in(int longest, long long now)
{
    long long wait = longest;
    for (int i = 0; i < pair_count; i++)
        for (int direction = 0; direction < 2; direction++) {
            const struct chunk *head = pairs[i].queued[direction].head;
            if (head != NULL && head->due - now < wait)
                wait = head->due - now < 0 ? 0 : head->due - now;
        }
    return (int)wait;
}

/* Moves one chunk from `from` to `to` (now, or queued when delayed); returns false when the pair
 * should close. */
static bool forward(struct pair *pair, int from, int to, bool forward_direction)
{
    char buffer[65536];
    ssize_t count = read(from, buffer, sizeof buffer);
    if (count <= 0)
        return false;
    bool discard = mode == MODE_DROP || (forward_direction && mode == MODE_DROP_FORWARD) ||
                   (!forward_direction && mode == MODE_DROP_BACKWARD);
    if (discard)
        return true;
    if (forward_direction && corrupt_next) {
        buffer[count / 2] ^= 0x10;
        corrupt_next = false;
    }
    if (!forward_direction && corrupt_next_backward) {
        buffer[count / 2] ^= 0x10;
        corrupt_next_backward = false;
    }
    struct queue *queue = &pair->queued[forward_direction];
    if (mode == MODE_DELAY || queue->head != NULL)
        return enqueue(queue, buffer, (size_t)count,
                       now_ms() + (mode == MODE_DELAY ? delay_ms : 0));
    return write_all(to, buffer, (size_t)count);
}

static void accept_connection(int listener, const char *target_host, const char *target_port)
{
    int client = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    if (client < 0)
        return;
    if (mode == MODE_CUT || pair_count == MAX_PAIRS) {
        close(client);
        return;
    }
    int target = open_socket(target_host, target_port, false);
    if (target < 0) {
        close(client);
        return;
    }
    pairs[pair_count++] = (struct pair){.client = client, .target = target};
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: kt_proxy LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT CONTROL_FIFO\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    int listener = open_socket(argv[1], argv[2], true);
    if (listener < 0) {
        fprintf(stderr, "kt_proxy: cannot listen on %s:%s: %s\n", argv[1], argv[2], strerror(errno));
        return 1;
    }
    /* O_RDWR keeps the FIFO open with a writer of our own, so poll never sees a permanent EOF. */
    int fifo = open(argv[5], O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fifo < 0) {
        fprintf(stderr, "kt_proxy: cannot open control FIFO %s: %s\n", argv[5], strerror(errno));
        return 1;
    }
    while (!stopping) {
        struct pollfd fds[2 + 2 * MAX_PAIRS];
        int count = 0;
        fds[count++] = (struct pollfd){.fd = listener, .events = POLLIN};
        fds[count++] = (struct pollfd){.fd = fifo, .events = POLLIN};
        for (int i = 0; i < pair_count; i++) {
            fds[count++] = (struct pollfd){.fd = pairs[i].client, .events = POLLIN};
            fds[count++] = (struct pollfd){.fd = pairs[i].target, .events = POLLIN};
        }
        int ready = poll(fds, (nfds_t)count, next_due_in(200, now_ms()));
        if (ready < 0 && errno != EINTR)
            break;
        long long now = now_ms();
        for (int i = pair_count - 1; i >= 0; i--)
            if (!flush_due(&pairs[i].queued[1], pairs[i].target, now) ||
                !flush_due(&pairs[i].queued[0], pairs[i].client, now))
                close_pair(i);
        if (ready <= 0)
            continue;
        if ((fds[1].revents & POLLIN) && !read_commands(fifo))
            break;
        /* Walk pairs backwards so close_pair's swap-with-last does not skip one. */
        for (int i = pair_count - 1; i >= 0; i--) {
            short client_events = fds[2 + 2 * i].revents, target_events = fds[3 + 2 * i].revents;
            bool alive = true;
            if (client_events & (POLLIN | POLLHUP | POLLERR))
                alive = forward(&pairs[i], pairs[i].client, pairs[i].target, true);
            if (alive && (target_events & (POLLIN | POLLHUP | POLLERR)))
                alive = forward(&pairs[i], pairs[i].target, pairs[i].client, false);
            if (!alive)
                close_pair(i);
        }
        if (fds[0].revents & POLLIN)
            accept_connection(listener, argv[3], argv[4]);
    }
    close_all_pairs();
    close(listener);
    close(fifo);
    return 0;
}
