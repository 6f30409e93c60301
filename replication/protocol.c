/*
 * protocol.c — the messages of the replication protocol, encoded and decoded.
 *
 * Every message travels in one encrypted channel frame (channel.c) as a type byte and a payload.
 * Payloads are little-endian; a position is u64 epoch, u64 txid, 32-byte hash. A payload that is
 * short, long, or out of range fails to decode, and the receiver then closes the connection.
 *
 *   POSITION   passive → active, first message of a stream session:
 *              u8 has_state, u64 epoch, position confirmed, position tip, u32 page size,
 *              u32 SQLite version number
 *   DECISION   active → passive, the answer: u8 kind (STREAM, BASECOPY, REFUSE), u64 epoch,
 *              position keep_through, position active tip, u16 length + reason text
 *   TX         active → passive: u8 committed, entry (position.c)
 *   CONFIRM    active → passive: position (committed up to there), u64 0
 *   ACK        passive → active: position (spooled and fsynced up to there), u64 applied txid
 *   HEARTBEAT  both ways, every heartbeat interval: position (sender's tip), u64 applied txid
 *   NACK       passive → active: u64 txid, u8 reason (I/O error, disk full, epoch, order)
 *   BASECOPY_BEGIN  u64 epoch of the active, position of the copy, u64 size in bytes,
 *              u32 page size
 *   BASECOPY_CHUNK  raw bytes of the copy, in order
 *   BASECOPY_END    BLAKE2b-256 of the whole copy
 *
 * A session (walsender.c, walreceiver.c): POSITION → DECISION → [BASECOPY_* → ACK of the copied
 * position] → TX/CONFIRM/HEARTBEAT from the active, ACK/NACK/HEARTBEAT from the passive.
 */
#include <string.h>

#include "replication/internal.h"

void repl_encode_position_msg(repl_buffer *buffer, const repl_msg_position *message)
{
    repl_buffer_put_u8(buffer, message->has_state ? 1 : 0);
    repl_buffer_put_u64(buffer, message->epoch);
    repl_position_encode(buffer, &message->confirmed);
    repl_position_encode(buffer, &message->tip);
    repl_buffer_put_u32(buffer, message->page_size);
    repl_buffer_put_u32(buffer, message->sqlite_version);
}

int repl_decode_position_msg(const unsigned char *data, size_t length, repl_msg_position *message)
{
    repl_reader reader;
    repl_reader_init(&reader, data, length);
    uint8_t has_state = repl_reader_u8(&reader);
    message->has_state = has_state == 1;
    message->epoch = repl_reader_u64(&reader);
    repl_position_decode(&reader, &message->confirmed);
    repl_position_decode(&reader, &message->tip);
    message->page_size = repl_reader_u32(&reader);
    message->sqlite_version = repl_reader_u32(&reader);
    if (!repl_reader_done(&reader) || has_state > 1 ||
        message->tip.txid < message->confirmed.txid) {
        return -1;
    }
    return 0;
}

void repl_encode_decision(repl_buffer *buffer, const repl_msg_decision *message)
{
    size_t reason_length = strnlen(message->reason, sizeof message->reason - 1);
    repl_buffer_put_u8(buffer, message->kind);
    repl_buffer_put_u64(buffer, message->epoch);
    repl_position_encode(buffer, &message->keep_through);
    repl_position_encode(buffer, &message->active_tip);
    unsigned char length[2] = {(unsigned char)reason_length, (unsigned char)(reason_length >> 8)};
    repl_buffer_put(buffer, length, 2);
    repl_buffer_put(buffer, message->reason, reason_length);
}

int repl_decode_decision(const unsigned char *data, size_t length, repl_msg_decision *message)
{
    repl_reader reader;
    repl_reader_init(&reader, data, length);
    memset(message, 0, sizeof *message);
    message->kind = repl_reader_u8(&reader);
    message->epoch = repl_reader_u64(&reader);
    repl_position_decode(&reader, &message->keep_through);
    repl_position_decode(&reader, &message->active_tip);
    const unsigned char *size = repl_reader_take(&reader, 2);
    size_t reason_length = size ? (size_t)size[0] | (size_t)size[1] << 8 : 0;
    if (reason_length >= sizeof message->reason) {
        return -1;
    }
    repl_reader_copy(&reader, message->reason, reason_length);
    message->reason[reason_length] = '\0';
    if (!repl_reader_done(&reader) || message->kind < REPL_DECIDE_STREAM ||
        message->kind > REPL_DECIDE_REFUSE) {
        return -1;
    }
    return 0;
}

void repl_encode_tx(repl_buffer *buffer, const repl_msg_tx *message)
{
    repl_buffer_put_u8(buffer, message->committed ? 1 : 0);
    repl_entry_encode(buffer, &message->entry);
}

int repl_decode_tx(const unsigned char *data, size_t length, repl_msg_tx *message)
{
    repl_reader reader;
    repl_reader_init(&reader, data, length);
    uint8_t committed = repl_reader_u8(&reader);
    message->committed = committed == 1;
    if (committed > 1 || repl_entry_decode_from_peer(&reader, &message->entry) != 0 ||
        !repl_reader_done(&reader)) {
        return -1;
    }
    return 0;
}

void repl_encode_ack(repl_buffer *buffer, const repl_msg_ack *message)
{
    repl_position_encode(buffer, &message->position);
    repl_buffer_put_u64(buffer, message->applied_txid);
}

int repl_decode_ack(const unsigned char *data, size_t length, repl_msg_ack *message)
{
    repl_reader reader;
    repl_reader_init(&reader, data, length);
    repl_position_decode(&reader, &message->position);
    message->applied_txid = repl_reader_u64(&reader);
    return repl_reader_done(&reader) ? 0 : -1;
}

void repl_encode_nack(repl_buffer *buffer, const repl_msg_nack *message)
{
    repl_buffer_put_u64(buffer, message->txid);
    repl_buffer_put_u8(buffer, message->reason);
}

int repl_decode_nack(const unsigned char *data, size_t length, repl_msg_nack *message)
{
    repl_reader reader;
    repl_reader_init(&reader, data, length);
    message->txid = repl_reader_u64(&reader);
    message->reason = repl_reader_u8(&reader);
    if (!repl_reader_done(&reader) || message->reason < REPL_NACK_IO ||
        message->reason > REPL_NACK_ORDER) {
        return -1;
    }
    return 0;
}

void repl_encode_basecopy_begin(repl_buffer *buffer, const repl_msg_basecopy_begin *message)
{
    repl_buffer_put_u64(buffer, message->epoch);
    repl_position_encode(buffer, &message->position);
    repl_buffer_put_u64(buffer, message->size);
    repl_buffer_put_u32(buffer, message->page_size);
}

int repl_decode_basecopy_begin(const unsigned char *data, size_t length,
                               repl_msg_basecopy_begin *message)
{
    repl_reader reader;
    repl_reader_init(&reader, data, length);
    message->epoch = repl_reader_u64(&reader);
    repl_position_decode(&reader, &message->position);
    message->size = repl_reader_u64(&reader);
    message->page_size = repl_reader_u32(&reader);
    uint32_t page_size = message->page_size;
    if (!repl_reader_done(&reader) || page_size < 512 || page_size > REPL_MAX_PAGE_SIZE ||
        (page_size & (page_size - 1)) != 0 || message->size % page_size != 0 ||
        message->size == 0) {
        return -1;
    }
    return 0;
}
