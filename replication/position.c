/*
 * position.c — where a node is in the database's history, and what it must remember.
 *
 * Positions
 *   A position is (epoch, txid, chain hash). txid counts transactions since the database's genesis
 *   (the log's first base, created with a random hash so two unrelated databases never share a
 *   position). Each transaction's hash is
 *       H = BLAKE2b-256("keytrustee-repl-chain-v1" || prev || epoch || txid || page size ||
 *                       database size || frame count || frames)
 *   with integers little-endian and frames the (page number, page) records in -wal order. The
 *   hash therefore names the whole history, not one -wal generation: the two nodes' -wal files
 *   differ (different salts, different checkpoints), their positions do not. Equal positions mean
 *   equal content; a chain that disagrees means the histories forked.
 *
 * Entries (the unit the spool stores and the channel ships), little-endian:
 *   u64 epoch, u64 txid, prev[32], hash[32], u32 page size, u32 database size, u32 frame count,
 *   origin cursor (see repl_cursor_encode), frame count * (u32 page number, page)
 *   Decoding recomputes the hash: an entry that does not hash to what it claims is rejected.
 *
 * The state file (keytrustee-repl.state), text so that an operator can read it:
 *   keytrustee-repl-state 1
 *   epoch N
 *   applied EPOCH TXID HASHHEX
 *   basecopy_pending 0|1
 *   check HEX16          (BLAKE2b of the lines above: a torn or edited file is refused)
 *   Written atomically (support.c). `applied` may lag the database (applying is idempotent, see
 *   apply.c), never lead it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replication/internal.h"

static const char chain_label[] = "keytrustee-repl-chain-v1";

void kt_repl_position_hex(const kt_repl_position *position, char out[KT_REPL_HASH_HEX_CHARS + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t index = 0; index < KT_HASH_BYTES; index++) {
        out[2 * index] = digits[position->hash[index] >> 4];
        out[2 * index + 1] = digits[position->hash[index] & 0x0F];
    }
    out[KT_REPL_HASH_HEX_CHARS] = '\0';
}

static int hex_decode(const char *text, unsigned char *out, size_t length)
{
    if (strlen(text) != 2 * length) {
        return -1;
    }
    for (size_t index = 0; index < 2 * length; index++) {
        char c = text[index];
        int value = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (value < 0) {
            return -1;
        }
        if (index % 2 == 0) {
            out[index / 2] = (unsigned char)(value << 4);
        } else {
            out[index / 2] |= (unsigned char)value;
        }
    }
    return 0;
}

bool repl_position_same(const kt_repl_position *a, const kt_repl_position *b)
{
    return a->txid == b->txid && memcmp(a->hash, b->hash, KT_HASH_BYTES) == 0;
}

kt_repl_position repl_entry_position(const repl_entry *entry)
{
    kt_repl_position position;
    position.epoch = entry->epoch;
    position.txid = entry->txid;
    memcpy(position.hash, entry->hash, KT_HASH_BYTES);
    return position;
}

void repl_entry_build(repl_entry *entry, uint64_t epoch, const kt_repl_position *tip,
                      const repl_frames *frames, const repl_wal_cursor *end)
{
    memset(entry, 0, sizeof *entry);
    entry->epoch = epoch;
    entry->txid = tip->txid + 1;
    memcpy(entry->prev, tip->hash, KT_HASH_BYTES);
    entry->page_size = frames->page_size;
    entry->db_size = frames->db_size;
    entry->frame_count = frames->count;
    entry->frames = frames->data;
    entry->frames_length = frames->length;
    entry->origin = *end;
    repl_chain_hash(entry, entry->hash);
}

void repl_entry_free(repl_entry *entry)
{
    if (entry != NULL) {
        free(entry->owned);
        memset(entry, 0, sizeof *entry);
    }
}

void repl_chain_hash(const repl_entry *entry, unsigned char out[KT_HASH_BYTES])
{
    unsigned char fields[8 + 8 + 4 + 4 + 4];
    repl_put_le64(fields, entry->epoch);
    repl_put_le64(fields + 8, entry->txid);
    repl_put_le32(fields + 16, entry->page_size);
    repl_put_le32(fields + 20, entry->db_size);
    repl_put_le32(fields + 24, entry->frame_count);
    kt_hash_state state;
    kt_hash_init(&state);
    kt_hash_update(&state, chain_label, sizeof chain_label - 1);
    kt_hash_update(&state, entry->prev, KT_HASH_BYTES);
    kt_hash_update(&state, fields, sizeof fields);
    kt_hash_update(&state, entry->frames, entry->frames_length);
    kt_hash_final(&state, out);
}

void repl_cursor_encode(repl_buffer *buffer, const repl_wal_cursor *cursor)
{
    repl_buffer_put_u8(buffer, cursor->valid ? 1 : 0);
    repl_buffer_put_u8(buffer, cursor->big_endian_checksum ? 1 : 0);
    repl_buffer_put_u32(buffer, cursor->page_size);
    repl_buffer_put_u32(buffer, cursor->checkpoint_sequence);
    repl_buffer_put_u32(buffer, cursor->salt1);
    repl_buffer_put_u32(buffer, cursor->salt2);
    repl_buffer_put_u64(buffer, cursor->offset);
    repl_buffer_put_u32(buffer, cursor->checksum[0]);
    repl_buffer_put_u32(buffer, cursor->checksum[1]);
}

void repl_cursor_decode(repl_reader *reader, repl_wal_cursor *cursor)
{
    cursor->valid = repl_reader_u8(reader) != 0;
    cursor->big_endian_checksum = repl_reader_u8(reader) != 0;
    cursor->page_size = repl_reader_u32(reader);
    cursor->checkpoint_sequence = repl_reader_u32(reader);
    cursor->salt1 = repl_reader_u32(reader);
    cursor->salt2 = repl_reader_u32(reader);
    cursor->offset = repl_reader_u64(reader);
    cursor->checksum[0] = repl_reader_u32(reader);
    cursor->checksum[1] = repl_reader_u32(reader);
}

void repl_position_encode(repl_buffer *buffer, const kt_repl_position *position)
{
    repl_buffer_put_u64(buffer, position->epoch);
    repl_buffer_put_u64(buffer, position->txid);
    repl_buffer_put(buffer, position->hash, KT_HASH_BYTES);
}

void repl_position_decode(repl_reader *reader, kt_repl_position *position)
{
    position->epoch = repl_reader_u64(reader);
    position->txid = repl_reader_u64(reader);
    repl_reader_copy(reader, position->hash, KT_HASH_BYTES);
}

void repl_entry_encode(repl_buffer *buffer, const repl_entry *entry)
{
    repl_buffer_put_u64(buffer, entry->epoch);
    repl_buffer_put_u64(buffer, entry->txid);
    repl_buffer_put(buffer, entry->prev, KT_HASH_BYTES);
    repl_buffer_put(buffer, entry->hash, KT_HASH_BYTES);
    repl_buffer_put_u32(buffer, entry->page_size);
    repl_buffer_put_u32(buffer, entry->db_size);
    repl_buffer_put_u32(buffer, entry->frame_count);
    repl_cursor_encode(buffer, &entry->origin);
    repl_buffer_put(buffer, entry->frames, entry->frames_length);
}

/* Sizes and page numbers only; the chain hash is the callers'. */
static int decode_entry_fields(repl_reader *reader, repl_entry *entry)
{
    memset(entry, 0, sizeof *entry);
    entry->epoch = repl_reader_u64(reader);
    entry->txid = repl_reader_u64(reader);
    repl_reader_copy(reader, entry->prev, KT_HASH_BYTES);
    repl_reader_copy(reader, entry->hash, KT_HASH_BYTES);
    entry->page_size = repl_reader_u32(reader);
    entry->db_size = repl_reader_u32(reader);
    entry->frame_count = repl_reader_u32(reader);
    repl_cursor_decode(reader, &entry->origin);
    uint32_t page_size = entry->page_size;
    if (reader->failed || page_size < 512 || page_size > REPL_MAX_PAGE_SIZE ||
        (page_size & (page_size - 1)) != 0 || entry->frame_count == 0 || entry->db_size == 0 ||
        entry->txid == 0) {
        return -1;
    }
    size_t record = 4 + (size_t)page_size;
    if (entry->frame_count > (reader->length - reader->offset) / record) {
        return -1;
    }
    entry->frames_length = (size_t)entry->frame_count * record;
    entry->frames = repl_reader_take(reader, entry->frames_length);
    if (entry->frames == NULL) {
        return -1;
    }
    for (uint32_t index = 0; index < entry->frame_count; index++) {
        if (repl_get_le32(entry->frames + (size_t)index * record) == 0) {
            return -1;
        }
    }
    return 0;
}

int repl_entry_decode(repl_reader *reader, repl_entry *entry)
{
    if (decode_entry_fields(reader, entry) != 0) {
        return -1;
    }
    unsigned char hash[KT_HASH_BYTES];
    repl_chain_hash(entry, hash);
    return kt_equal(hash, entry->hash, KT_HASH_BYTES) ? 0 : -1;
}

int repl_entry_decode_from_peer(repl_reader *reader, repl_entry *entry)
{
    return decode_entry_fields(reader, entry);
}

/* ---- the state file ------------------------------------------------------------------------- */

static void state_check(const char *body, size_t length, char out[17])
{
    unsigned char hash[KT_HASH_BYTES];
    kt_hash(hash, body, length);
    for (int index = 0; index < 8; index++) {
        (void)snprintf(out + 2 * index, 3, "%02x", hash[index]);
    }
}

int repl_state_save(const char *path, const repl_state_file *state, char *error,
                    size_t error_size)
{
    char hex[KT_REPL_HASH_HEX_CHARS + 1];
    kt_repl_position_hex(&state->applied, hex);
    char text[512];
    int length = snprintf(text, sizeof text,
                          "keytrustee-repl-state 1\nepoch %" PRIu64 "\napplied %" PRIu64
                          " %" PRIu64 " %s\nbasecopy_pending %d\n",
                          state->epoch, state->applied.epoch, state->applied.txid, hex,
                          state->basecopy_pending ? 1 : 0);
    if (length < 0 || (size_t)length >= sizeof text - 32) {
        repl_error(error, error_size, "the replication state does not fit its buffer");
        return -1;
    }
    char check[17];
    state_check(text, (size_t)length, check);
    length += snprintf(text + length, sizeof text - (size_t)length, "check %s\n", check);
    if (repl_write_file_atomic(path, text, (size_t)length) != 0) {
        repl_error(error, error_size, "cannot write the replication state %s: %m", path);
        return -1;
    }
    return 0;
}

static int parse_state(char *text, repl_state_file *state)
{
    char *check_line = strstr(text, "check ");
    if (check_line == NULL || (check_line != text && check_line[-1] != '\n')) {
        return -1;
    }
    char expected[17], found[17] = "";
    state_check(text, (size_t)(check_line - text), expected);
    if (sscanf(check_line, "check %16s", found) != 1 || strcmp(found, expected) != 0) {
        return -1;
    }
    int version = 0, pending = 0;
    char hex[KT_REPL_HASH_HEX_CHARS + 2] = "";
    memset(state, 0, sizeof *state);
    if (sscanf(text,
               "keytrustee-repl-state %d\nepoch %" SCNu64 "\napplied %" SCNu64 " %" SCNu64
               " %65s\nbasecopy_pending %d\n",
               &version, &state->epoch, &state->applied.epoch, &state->applied.txid, hex,
               &pending) != 6 ||
        version != 1 || (pending != 0 && pending != 1) ||
        hex_decode(hex, state->applied.hash, KT_HASH_BYTES) != 0) {
        return -1;
    }
    state->basecopy_pending = pending == 1;
    return 0;
}

int repl_state_load(const char *path, repl_state_file *state, char *error, size_t error_size)
{
    FILE *file = fopen(path, "re");
    if (file == NULL) {
        return 0;
    }
    char text[1024];
    size_t length = fread(text, 1, sizeof text - 1, file);
    int read_error = ferror(file);
    (void)fclose(file);
    text[length] = '\0';
    if (read_error || parse_state(text, state) != 0) {
        repl_error(error, error_size,
                   "the replication state %s is damaged; move it away and re-run "
                   "`ktadmin init-slave` on the passive",
                   path);
        return -1;
    }
    return 1;
}
