/*
 * walformat.c — SQLite's -wal file format, read and written by replication/ itself.
 *
 * The format (SQLite's wal.c, "WAL header" and "frame" comments; www/walformat.html)
 *   Header, 32 bytes, big-endian u32s: magic (0x377f0682, or 0x377f0683 when the checksums below
 *   read the data as big-endian words), format version 3007000, page size, checkpoint sequence,
 *   salt-1, salt-2, checksum-1, checksum-2 (over the first 24 bytes).
 *   Frames follow, each a 24-byte header — page number, database size in pages after the commit
 *   (non-zero only on a transaction's last frame: the commit frame), salt-1, salt-2, checksum-1,
 *   checksum-2 — and one page. The checksum runs through the whole file: each frame's checksum
 *   continues from the previous frame's (the header's for the first) over the frame header's
 *   first 8 bytes and the page.
 *   A frame is valid while its salts equal the header's and the checksum chain holds; SQLite's
 *   recovery keeps everything up to the last valid commit frame. After a checkpoint, the next
 *   writer restarts the file at offset 0 with new salts: frames of the previous generation stay
 *   behind the new ones but fail the salt test.
 *
 * What replication/ does with it
 *   - The active reads each transaction back from its -wal at the commit's xSync (vfs_capture.c):
 *     from the end of the last shipped commit frame to the last valid commit frame. Reading back,
 *     rather than watching xWrite, is what makes spilled transactions right: SQLite writes frames
 *     of a big transaction early and rewrites their headers (walRewriteChecksums) at commit.
 *   - The passive appends shipped pages to its own -wal with its own salts and checksum chain
 *     (apply.c), so the two nodes' -wal files never need to agree byte for byte.
 *   - Startup compares the log with the -wal (vfs_capture.c) with the same scan.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "replication/internal.h"

static bool page_size_valid(uint32_t page_size)
{
    return page_size >= 512 && page_size <= REPL_MAX_PAGE_SIZE &&
           (page_size & (page_size - 1)) == 0;
}

/* ---- frame lists ----------------------------------------------------------------------------- */

int repl_frames_add(repl_frames *frames, uint32_t page_number, const unsigned char *page)
{
    size_t record = 4 + (size_t)frames->page_size;
    if (frames->length + record > REPL_MAX_TRANSACTION_BYTES) {
        errno = EFBIG; /* could not travel in one message */
        return -1;
    }
    if (frames->length + record > frames->capacity) {
        size_t capacity = frames->capacity ? frames->capacity * 2 : record * 16;
        while (capacity < frames->length + record) {
            capacity *= 2;
        }
        unsigned char *grown = realloc(frames->data, capacity);
        if (grown == NULL) {
            return -1;
        }
        frames->data = grown;
        frames->capacity = capacity;
    }
    repl_put_le32(frames->data + frames->length, page_number);
    memcpy(frames->data + frames->length + 4, page, frames->page_size);
    frames->length += record;
    frames->count++;
    return 0;
}

void repl_frames_reset(repl_frames *frames)
{
    frames->count = 0;
    frames->length = 0;
    frames->db_size = 0;
}

void repl_frames_free(repl_frames *frames)
{
    free(frames->data);
    memset(frames, 0, sizeof *frames);
}

uint32_t repl_frame_page_number(const repl_frames *frames, uint32_t index)
{
    return repl_get_le32(frames->data + (size_t)index * (4 + (size_t)frames->page_size));
}

const unsigned char *repl_frame_page(const repl_frames *frames, uint32_t index)
{
    return frames->data + (size_t)index * (4 + (size_t)frames->page_size) + 4;
}

/* ---- checksums ------------------------------------------------------------------------------ */

/* SQLite's walChecksumBytes, reading words in the byte order the magic number names. */
void repl_wal_checksum(bool big_endian, const unsigned char *data, size_t length,
                       uint32_t checksum[2])
{
    uint32_t s1 = checksum[0], s2 = checksum[1];
    for (size_t offset = 0; offset + 8 <= length; offset += 8) {
        uint32_t first, second;
        if (big_endian) {
            first = repl_get_be32(data + offset);
            second = repl_get_be32(data + offset + 4);
        } else {
            first = repl_get_le32(data + offset);
            second = repl_get_le32(data + offset + 4);
        }
        s1 += first + s2;
        s2 += second + s1;
    }
    checksum[0] = s1;
    checksum[1] = s2;
}

/* ---- reading -------------------------------------------------------------------------------- */

int repl_wal_read_header(repl_wal_read_function read, void *context, repl_wal_cursor *start)
{
    memset(start, 0, sizeof *start);
    unsigned char header[REPL_WAL_HEADER_BYTES];
    long got = read(context, header, sizeof header, 0);
    if (got < 0) {
        return -1;
    }
    if (got < (long)sizeof header) {
        return 0; /* missing or empty: no generation */
    }
    uint32_t magic = repl_get_be32(header);
    uint32_t page_size = repl_get_be32(header + 8);
    if ((magic & 0xFFFFFFFEu) != REPL_WAL_MAGIC || !page_size_valid(page_size) ||
        repl_get_be32(header + 4) != REPL_WAL_VERSION) {
        return 0;
    }
    bool big_endian = (magic & 1) != 0;
    uint32_t checksum[2] = {0, 0};
    repl_wal_checksum(big_endian, header, 24, checksum);
    if (checksum[0] != repl_get_be32(header + 24) || checksum[1] != repl_get_be32(header + 28)) {
        return 0;
    }
    start->valid = true;
    start->big_endian_checksum = big_endian;
    start->page_size = page_size;
    start->checkpoint_sequence = repl_get_be32(header + 12);
    start->salt1 = repl_get_be32(header + 16);
    start->salt2 = repl_get_be32(header + 20);
    start->offset = REPL_WAL_HEADER_BYTES;
    start->checksum[0] = checksum[0];
    start->checksum[1] = checksum[1];
    return 0;
}

/* What a scan accepts and where it stops. */
typedef struct scan_rules {
    bool accept_held; /* a held commit frame ends the scan as a transaction */
    bool first_only;  /* stop after the first transaction */
} scan_rules;

/* Checks one frame against the cursor before it (SQLite's walDecodeFrame); advances the cursor
 * and returns true when the frame is valid. A held commit frame (salt-1 xored with
 * REPL_WAL_HOLD_MASK, see vfs_capture.c) is valid only when `accept_held`, and sets *held. The
 * checksum does not cover the salts, so a held frame's checksum is its released one's. */
static bool frame_valid(const unsigned char *frame, repl_wal_cursor *cursor, bool accept_held,
                        bool *held)
{
    uint32_t salt1 = repl_get_be32(frame + 8);
    *held = accept_held && repl_get_be32(frame + 4) != 0 &&
            salt1 == (cursor->salt1 ^ REPL_WAL_HOLD_MASK);
    if ((salt1 != cursor->salt1 && !*held) || repl_get_be32(frame + 12) != cursor->salt2 ||
        repl_get_be32(frame) == 0) {
        return false;
    }
    uint32_t checksum[2] = {cursor->checksum[0], cursor->checksum[1]};
    repl_wal_checksum(cursor->big_endian_checksum, frame, 8, checksum);
    repl_wal_checksum(cursor->big_endian_checksum, frame + REPL_WAL_FRAME_HEADER_BYTES,
                      cursor->page_size, checksum);
    if (checksum[0] != repl_get_be32(frame + 16) || checksum[1] != repl_get_be32(frame + 20)) {
        return false;
    }
    cursor->checksum[0] = checksum[0];
    cursor->checksum[1] = checksum[1];
    cursor->offset += REPL_WAL_FRAME_HEADER_BYTES + cursor->page_size;
    return true;
}

/* The frames kept so far, so that frames after the last commit frame can be dropped. */
typedef struct scan_mark {
    size_t length;
    uint32_t count;
} scan_mark;

static int scan(repl_wal_read_function read, void *context, const repl_wal_cursor *from,
                repl_frames *frames, const scan_rules *rules, repl_wal_scan_result *result)
{
    memset(result, 0, sizeof *result);
    result->end = *from;
    if (!from->valid) {
        return 0;
    }
    size_t frame_bytes = REPL_WAL_FRAME_HEADER_BYTES + (size_t)from->page_size;
    unsigned char *frame = malloc(frame_bytes);
    if (frame == NULL) {
        return -1;
    }
    scan_mark kept = {frames ? frames->length : 0, frames ? frames->count : 0};
    if (frames != NULL) {
        frames->page_size = from->page_size;
    }
    repl_wal_cursor cursor = *from;
    int status = 0;
    bool held = false;
    for (;;) {
        uint64_t at = cursor.offset;
        long got = read(context, frame, frame_bytes, at);
        if (got < 0) {
            status = -1;
            break;
        }
        if ((size_t)got < frame_bytes || !frame_valid(frame, &cursor, rules->accept_held, &held)) {
            break;
        }
        if (frames != NULL &&
            repl_frames_add(frames, repl_get_be32(frame), frame + REPL_WAL_FRAME_HEADER_BYTES) != 0) {
            status = -1;
            break;
        }
        uint32_t db_size = repl_get_be32(frame + 4);
        if (db_size == 0) {
            continue;
        }
        /* a commit frame: everything so far is a whole transaction */
        result->end = cursor;
        result->commits++;
        result->held_offset = held ? at : 0;
        if (frames != NULL) {
            frames->db_size = db_size;
            kept.length = frames->length;
            kept.count = frames->count;
        }
        if (held || rules->first_only) {
            break; /* nothing follows a held commit: the writer waits on it */
        }
    }
    if (frames != NULL) { /* frames after the last commit frame belong to no transaction */
        frames->length = kept.length;
        frames->count = kept.count;
    }
    free(frame);
    return status;
}

int repl_wal_scan(repl_wal_read_function read, void *context, const repl_wal_cursor *from,
                  repl_frames *frames, repl_wal_cursor *end, unsigned *commits)
{
    scan_rules rules = {false, false};
    repl_wal_scan_result result;
    int status = scan(read, context, from, frames, &rules, &result);
    *end = result.end;
    *commits = result.commits;
    return status;
}

int repl_wal_scan_holding(repl_wal_read_function read, void *context, const repl_wal_cursor *from,
                          repl_frames *frames, bool first_only, repl_wal_scan_result *result)
{
    scan_rules rules = {true, first_only};
    return scan(read, context, from, frames, &rules, result);
}

void repl_wal_hold_header(unsigned char *frame_header)
{
    repl_put_be32(frame_header + 8, repl_get_be32(frame_header + 8) ^ REPL_WAL_HOLD_MASK);
}

long repl_wal_read_fd(void *context, void *buffer, size_t length, uint64_t offset)
{
    return repl_pread_full(*(const int *)context, buffer, length, offset);
}

/* ---- writing -------------------------------------------------------------------------------- */

void repl_wal_new_header(unsigned char out[REPL_WAL_HEADER_BYTES], uint32_t page_size,
                         uint32_t checkpoint_sequence, repl_wal_cursor *cursor)
{
    uint32_t salts[2];
    kt_random(salts, sizeof salts);
    repl_put_be32(out, REPL_WAL_MAGIC);
    repl_put_be32(out + 4, REPL_WAL_VERSION);
    repl_put_be32(out + 8, page_size);
    repl_put_be32(out + 12, checkpoint_sequence);
    repl_put_be32(out + 16, salts[0]);
    repl_put_be32(out + 20, salts[1]);
    uint32_t checksum[2] = {0, 0};
    repl_wal_checksum(false, out, 24, checksum);
    repl_put_be32(out + 24, checksum[0]);
    repl_put_be32(out + 28, checksum[1]);

    memset(cursor, 0, sizeof *cursor);
    cursor->valid = true;
    cursor->big_endian_checksum = false;
    cursor->page_size = page_size;
    cursor->checkpoint_sequence = checkpoint_sequence;
    cursor->salt1 = salts[0];
    cursor->salt2 = salts[1];
    cursor->offset = REPL_WAL_HEADER_BYTES;
    cursor->checksum[0] = checksum[0];
    cursor->checksum[1] = checksum[1];
}

void repl_wal_frame_header(unsigned char out[REPL_WAL_FRAME_HEADER_BYTES], uint32_t page_number,
                           uint32_t db_size, const unsigned char *page, repl_wal_cursor *cursor)
{
    repl_put_be32(out, page_number);
    repl_put_be32(out + 4, db_size);
    repl_put_be32(out + 8, cursor->salt1);
    repl_put_be32(out + 12, cursor->salt2);
    repl_wal_checksum(cursor->big_endian_checksum, out, 8, cursor->checksum);
    repl_wal_checksum(cursor->big_endian_checksum, page, cursor->page_size, cursor->checksum);
    repl_put_be32(out + 16, cursor->checksum[0]);
    repl_put_be32(out + 20, cursor->checksum[1]);
    cursor->offset += REPL_WAL_FRAME_HEADER_BYTES + cursor->page_size;
}
