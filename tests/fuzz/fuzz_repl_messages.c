/*
 * fuzz_repl_messages.c — the replication messages (replication/protocol.c and the entry codec of
 * replication/position.c) and the replication state file (repl_state_load).
 *
 * Input: one byte, then a payload. The low four bits of the byte pick a message type of
 * replication/internal.h (POSITION, DECISION, TX, CONFIRM, ACK, NACK, HEARTBEAT, BASECOPY_BEGIN;
 * CHUNK and END carry raw bytes and have no decoder); 0 and the unused values read the payload as
 * the state file instead. Bit 7 asks the harness to put the right chain hash into a TX payload
 * before decoding, because the fuzzer cannot compute BLAKE2b itself: that lets it reach the
 * accepting paths of the log's entry decoder instead of stopping at the hash check.
 *
 * Property: whatever a decoder accepts re-encodes to bytes that decode again and re-encode to
 * the same bytes (encode(decode(y)) == y for y = encode(decode(x))), so sender and receiver agree
 * on every message either of them can produce; and an entry read back from the log is taken
 * exactly when its chain hash matches (a TX from the peer is decoded without that check).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replication/internal.h"
#include "tests/fuzz/fuzz.h"

/* Encodes `type` from one decoded message; returns false when the payload does not decode. */
typedef bool (*round_function)(const unsigned char *data, size_t length, repl_buffer *out);

static bool round_position(const unsigned char *data, size_t length, repl_buffer *out)
{
    repl_msg_position message;
    if (repl_decode_position_msg(data, length, &message) != 0)
        return false;
    repl_encode_position_msg(out, &message);
    return true;
}

static bool round_decision(const unsigned char *data, size_t length, repl_buffer *out)
{
    repl_msg_decision message;
    if (repl_decode_decision(data, length, &message) != 0)
        return false;
    repl_encode_decision(out, &message);
    return true;
}

/* A TX from the peer is not hashed again before its ACK (the channel's AEAD proves whose bytes
 * they are; position.c, repl_entry_decode_from_peer). Read back from the log it is: the log's
 * entry decoder takes the same entry exactly when its chain hash matches. */
static void check_log_decoder(const repl_entry *entry)
{
    unsigned char hash[KT_HASH_BYTES];
    repl_chain_hash(entry, hash);
    bool matches = memcmp(hash, entry->hash, KT_HASH_BYTES) == 0;
    repl_buffer encoded = {0};
    repl_entry_encode(&encoded, entry);
    FUZZ_CHECK(!encoded.failed, "out of memory encoding an entry");
    repl_reader reader;
    repl_reader_init(&reader, encoded.data, encoded.length);
    repl_entry decoded;
    bool accepted = repl_entry_decode(&reader, &decoded) == 0 && repl_reader_done(&reader);
    FUZZ_CHECK(accepted == matches, "the log's entry decoder %s an entry whose chain hash %s",
               accepted ? "accepted" : "refused", matches ? "matches" : "does not match");
    repl_buffer_free(&encoded);
}

static bool round_tx(const unsigned char *data, size_t length, repl_buffer *out)
{
    repl_msg_tx message;
    if (repl_decode_tx(data, length, &message) != 0)
        return false;
    check_log_decoder(&message.entry);
    repl_encode_tx(out, &message);
    return true;
}

static bool round_ack(const unsigned char *data, size_t length, repl_buffer *out)
{
    repl_msg_ack message;
    if (repl_decode_ack(data, length, &message) != 0)
        return false;
    repl_encode_ack(out, &message);
    return true;
}

static bool round_nack(const unsigned char *data, size_t length, repl_buffer *out)
{
    repl_msg_nack message;
    if (repl_decode_nack(data, length, &message) != 0)
        return false;
    repl_encode_nack(out, &message);
    return true;
}

static bool round_basecopy_begin(const unsigned char *data, size_t length, repl_buffer *out)
{
    repl_msg_basecopy_begin message;
    if (repl_decode_basecopy_begin(data, length, &message) != 0)
        return false;
    repl_encode_basecopy_begin(out, &message);
    return true;
}

static round_function decoder_for(unsigned type)
{
    switch (type) {
    case REPL_MSG_POSITION: return round_position;
    case REPL_MSG_DECISION: return round_decision;
    case REPL_MSG_TX: return round_tx;
    case REPL_MSG_CONFIRM:
    case REPL_MSG_ACK:
    case REPL_MSG_HEARTBEAT: return round_ack;
    case REPL_MSG_NACK: return round_nack;
    case REPL_MSG_BASECOPY_BEGIN: return round_basecopy_begin;
    default: return NULL;
    }
}

/* TX layout: u8 committed, u64 epoch, u64 txid, prev[32], hash[32], u32 page size, u32 db size,
 * u32 frame count, cursor (2 + 4 * 4 + 8 + 2 * 4 bytes), frames. Writes the chain hash of what
 * the payload says into its hash field, when the payload is long enough to say it. */
static void fix_chain_hash(unsigned char *payload, size_t length)
{
    const size_t hash_offset = 1 + 8 + 8 + KT_HASH_BYTES;
    const size_t frames_offset = hash_offset + KT_HASH_BYTES + 3 * 4 + 34;
    if (length < frames_offset)
        return;
    repl_entry entry;
    memset(&entry, 0, sizeof entry);
    entry.epoch = repl_get_le64(payload + 1);
    entry.txid = repl_get_le64(payload + 9);
    memcpy(entry.prev, payload + 17, KT_HASH_BYTES);
    entry.page_size = repl_get_le32(payload + hash_offset + KT_HASH_BYTES);
    entry.db_size = repl_get_le32(payload + hash_offset + KT_HASH_BYTES + 4);
    entry.frame_count = repl_get_le32(payload + hash_offset + KT_HASH_BYTES + 8);
    size_t record = 4 + (size_t)entry.page_size;
    if (entry.frame_count == 0 || entry.frame_count > (length - frames_offset) / record)
        return;
    entry.frames = payload + frames_offset;
    entry.frames_length = (size_t)entry.frame_count * record;
    repl_chain_hash(&entry, payload + hash_offset);
}

static void check_message(unsigned type, const unsigned char *data, size_t length)
{
    round_function round = decoder_for(type);
    if (round == NULL)
        return;
    repl_buffer first = {0}, second = {0};
    if (round(data, length, &first)) {
        FUZZ_CHECK(!first.failed, "out of memory encoding");
        FUZZ_CHECK(round(first.data, first.length, &second),
                   "type %u: the encoding of a decoded message does not decode", type);
        FUZZ_CHECK(first.length == second.length &&
                       memcmp(first.data, second.data, first.length) == 0,
                   "type %u: encode(decode(y)) != y", type);
    }
    repl_buffer_free(&first);
    repl_buffer_free(&second);
}

static void check_state_file(const unsigned char *data, size_t length)
{
    const char *path = fuzz_file_write("keytrustee-repl.state", data, length, 0600);
    repl_state_file state;
    char error[512];
    if (repl_state_load(path, &state, error, sizeof error) != 1)
        return;
    char saved_path[4096];
    snprintf(saved_path, sizeof saved_path, "%s/saved.state", fuzz_directory());
    FUZZ_CHECK(repl_state_save(saved_path, &state, error, sizeof error) == 0,
               "an accepted state does not save: %s", error);
    repl_state_file again;
    FUZZ_CHECK(repl_state_load(saved_path, &again, error, sizeof error) == 1,
               "a saved state does not load: %s", error);
    FUZZ_CHECK(again.epoch == state.epoch && again.applied.epoch == state.applied.epoch &&
                   again.applied.txid == state.applied.txid &&
                   memcmp(again.applied.hash, state.applied.hash, KT_HASH_BYTES) == 0 &&
                   again.basecopy_pending == state.basecopy_pending,
               "the state changed in a save/load");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_setup("fuzz_repl_messages");
    if (size < 1)
        return 0;
    unsigned type = data[0] & 0x0fu;
    bool fix_hash = (data[0] & 0x80u) != 0;
    size_t length = size - 1;
    /* A private copy, exactly as long as the payload, so ASan sees any read past it. */
    unsigned char *payload = malloc(length > 0 ? length : 1);
    if (payload == NULL)
        abort();
    memcpy(payload, data + 1, length);
    if (fix_hash && type == REPL_MSG_TX)
        fix_chain_hash(payload, length);
    if (decoder_for(type) != NULL)
        check_message(type, payload, length);
    else
        check_state_file(payload, length);
    free(payload);
    return 0;
}
