-- bench/wrk/kt_signed.lua — a wrk request hook that signs every request the way docs/api.md
-- says ("Request signing"): X-KT-Client, X-KT-Timestamp, a fresh X-KT-Nonce and an Ed25519
-- X-KT-Signature over
-- "keytrustee-request-v2\nMETHOD\nHOST\nTARGET\nTIMESTAMP\nNONCE\nBLAKE2b-256(body)", where HOST
-- is the authority of the URL given to wrk (host[:port] as written there), sent as the Host
-- header: a keytrustee node refuses a request signed for another node.
-- The crypto is libsodium through LuaJIT's FFI (Debian's wrk is built on LuaJIT), so each request
-- costs the client one signature, as a real client would pay.
--
-- Use through bench_wrk (bench/nginx_tls.sh): bench_wrk URL CONNS SECONDS --script bench/wrk/kt_signed.lua
-- (report.lua loads it in every wrk thread). Configured by the environment:
--   KT_BENCH_KEY_FILE  a ktclient confdir's client.key ("keytrustee-client-key-v1 <base64 sk>")
--   KT_BENCH_METHOD    GET (default) or POST, DELETE, ...
--   KT_BENCH_PATH      the request target, e.g. /v1/deposits/<uuid> or /v1/deposits?handle=disk1;
--                      "{uuid}" in it becomes a uuid drawn at random from KT_BENCH_UUID_FILE
--   KT_BENCH_UUID_FILE one deposit uuid a line (the scale suite's random reads); every request
--                      draws one uniformly (math.random, seeded from libsodium in each thread)
--   KT_BENCH_BODY      the body (POST), where every "{unique}" becomes a string unique to this
--                      request (thread, random prefix, counter): e.g.
--                      {"handle":"bench-{unique}","secret":"<base64 of a 100-byte key>"}
-- The URL given to wrk supplies scheme, host and port (the signed Host); its path is ignored.

local ffi = require("ffi")
ffi.cdef[[
int sodium_init(void);
void randombytes_buf(void * const buf, const size_t size);
int crypto_generichash(unsigned char *out, size_t outlen, const unsigned char *in,
                       unsigned long long inlen, const unsigned char *key, size_t keylen);
int crypto_sign_detached(unsigned char *sig, unsigned long long *siglen_p,
                         const unsigned char *m, unsigned long long mlen, const unsigned char *sk);
char *sodium_bin2hex(char * const hex, const size_t hex_maxlen,
                     const unsigned char * const bin, const size_t bin_len);
char *sodium_bin2base64(char * const b64, const size_t b64_maxlen,
                        const unsigned char * const bin, const size_t bin_len, const int variant);
int sodium_base642bin(unsigned char * const bin, const size_t bin_maxlen,
                      const char * const b64, const size_t b64_len, const char * const ignore,
                      size_t * const bin_len, const char ** const b64_end, const int variant);
]]
local sodium = ffi.load("sodium")
if sodium.sodium_init() < 0 then error("kt_signed.lua: sodium_init failed") end
local BASE64 = 1 -- sodium_base64_VARIANT_ORIGINAL

local function hex(bytes, n)
  local out = ffi.new("char[?]", n * 2 + 1)
  sodium.sodium_bin2hex(out, n * 2 + 1, bytes, n)
  return ffi.string(out)
end
local function base64(bytes, n)
  local size = math.floor((n + 2) / 3) * 4 + 1
  local out = ffi.new("char[?]", size)
  sodium.sodium_bin2base64(out, size, bytes, n, BASE64)
  return ffi.string(out)
end

local key_file = os.getenv("KT_BENCH_KEY_FILE") or error("kt_signed.lua: set KT_BENCH_KEY_FILE")
local handle = io.open(key_file, "r") or error("kt_signed.lua: cannot read " .. key_file)
local key_line = handle:read("*l"); handle:close()
local key_b64 = key_line:match("^keytrustee%-client%-key%-v1 (%S+)$")
  or error("kt_signed.lua: " .. key_file .. " is not a keytrustee client key")
local sk = ffi.new("unsigned char[64]")
local sk_len = ffi.new("size_t[1]")
if sodium.sodium_base642bin(sk, 64, key_b64, #key_b64, nil, sk_len, nil, BASE64) ~= 0
    or tonumber(sk_len[0]) ~= 64 then
  error("kt_signed.lua: bad key in " .. key_file)
end
-- libsodium's Ed25519 secret key is seed || public key; the fingerprint is the first 20 bytes of
-- BLAKE2b-256(public key), uppercase hex.
local digest = ffi.new("unsigned char[32]")
sodium.crypto_generichash(digest, 32, sk + 32, 32, nil, 0)
local fingerprint = hex(digest, 20):upper()

local uuids = {}
local uuid_file = os.getenv("KT_BENCH_UUID_FILE")
if uuid_file ~= nil and uuid_file ~= "" then
  local list = io.open(uuid_file, "r") or error("kt_signed.lua: cannot read " .. uuid_file)
  for line in list:lines() do
    if line ~= "" then uuids[#uuids + 1] = line end
  end
  list:close()
  if #uuids == 0 then error("kt_signed.lua: no uuid in " .. uuid_file) end
end

local method = os.getenv("KT_BENCH_METHOD") or "GET"
local path = os.getenv("KT_BENCH_PATH") or error("kt_signed.lua: set KT_BENCH_PATH")
local body_template = os.getenv("KT_BENCH_BODY")

-- The Host header for wrk's URL, built as wrk itself builds it (wrk.lua's wrk.init): IPv6 in
-- brackets, the port only when the URL gives one. Set explicitly below so the header sent is the
-- one signed, whatever a wrk version's default.
local function authority()
  local host = wrk.host
  if host:find(":") then host = "[" .. host .. "]" end
  if wrk.port ~= nil and wrk.port ~= "" then host = host .. ":" .. wrk.port end
  return host
end

local prefix, counter = "", 0
local nonce = ffi.new("unsigned char[16]")
local signature = ffi.new("unsigned char[64]")

function init(args)
  local r = ffi.new("unsigned char[6]")
  sodium.randombytes_buf(r, 6)
  prefix = hex(r, 6)
  local seed = ffi.new("uint32_t[1]")
  sodium.randombytes_buf(seed, 4)
  math.randomseed(tonumber(seed[0]))
end

function request()
  local target = path
  if #uuids > 0 then
    target = path:gsub("{uuid}", uuids[math.random(#uuids)])
  end
  local body = nil
  if body_template ~= nil and body_template ~= "" then
    counter = counter + 1
    body = body_template:gsub("{unique}", prefix .. "-" .. counter)
  end
  local timestamp = tostring(os.time())
  sodium.randombytes_buf(nonce, 16)
  local nonce_b64 = base64(nonce, 16)
  local payload = body or ""
  sodium.crypto_generichash(digest, 32, payload, #payload, nil, 0)
  local host = authority()
  local to_sign = "keytrustee-request-v2\n" .. method .. "\n" .. host .. "\n" .. target .. "\n" ..
    timestamp .. "\n" .. nonce_b64 .. "\n" .. hex(digest, 32)
  sodium.crypto_sign_detached(signature, nil, to_sign, #to_sign, sk)
  local headers = {
    ["Host"] = host,
    ["X-KT-Client"] = fingerprint,
    ["X-KT-Timestamp"] = timestamp,
    ["X-KT-Nonce"] = nonce_b64,
    ["X-KT-Signature"] = base64(signature, 64),
  }
  if body ~= nil then headers["Content-Type"] = "application/json" end
  -- wrk.format() ignores wrk.headers (the -H options: "Connection: close" for the handshake rows)
  -- once it is given a header table, so they are copied in here.
  for name, value in pairs(wrk.headers) do
    if name:lower() ~= "host" then headers[name] = value end
  end
  return wrk.format(method, target, headers, body)
end
