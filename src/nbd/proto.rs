//! The NBD wire format (NetworkBlockDevice/nbd `doc/proto.md`): constants, and pure functions
//! between bytes and messages. No I/O here, so the fuzz target and unit tests can drive them.
//!
//! Must never panic on any input, and never trust a length field before checking it against the
//! bytes actually there.

/// `NBDMAGIC`, the first 8 bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle magic, and the start of every option the client sends.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of option replies.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of transmission requests.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of simple replies.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of structured reply chunks.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags (server): fixed newstyle, and no 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flags: the same two bits; any other bit ends the session.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Transmission flags.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
pub const FLAG_READ_ONLY: u16 = 1 << 1;
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;

/// Option reply types.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub const REP_ERR_POLICY: u32 = (1 << 31) + 2;
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
pub const REP_ERR_TOO_BIG: u32 = (1 << 31) + 9;

/// Information types of `NBD_REP_INFO`.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Commands.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;

/// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;

/// Structured reply flags and types.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;
pub const REPLY_TYPE_ERROR_OFFSET: u16 = (1 << 15) + 2;

/// Error values (the protocol's own numbers, not the host's errno).
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const EINVAL: u32 = 22;
pub const EOVERFLOW: u32 = 75;

/// Largest read (and write payload) a client may send: 32 MiB, what the protocol says no
/// server should call a denial of service. Larger requests end the connection.
pub const MAX_PAYLOAD: u32 = 32 << 20;

/// Largest option data accepted (names are at most 4096 bytes); larger ends the connection.
pub const MAX_OPTION_DATA: u32 = 64 << 10;

/// Longest string (export name, error message) the protocol allows.
pub const MAX_STRING: usize = 4096;

/// Size of the client flags message.
pub const CLIENT_FLAGS_LEN: usize = 4;
/// Size of an option header (magic, option, length).
pub const OPTION_HEADER_LEN: usize = 16;
/// Size of a transmission request header.
pub const REQUEST_LEN: usize = 28;

/// Why the client's bytes are not a valid message: the session ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// A magic number is wrong.
    #[error("bad magic {found:#x} (expected {expected:#x})")]
    Magic {
        /// What the client sent.
        found: u64,
        /// What the protocol wants there.
        expected: u64,
    },
    /// The client set flags the server did not offer.
    #[error("unknown client flags {0:#x}")]
    ClientFlags(u32),
    /// An option's data is larger than the server accepts.
    #[error("option {option} with {len} bytes of data (at most {MAX_OPTION_DATA})")]
    OptionTooLong {
        /// The option.
        option: u32,
        /// Its data length.
        len: u32,
    },
    /// A write payload is larger than [`MAX_PAYLOAD`].
    #[error("request of {len} bytes (at most {MAX_PAYLOAD})")]
    PayloadTooLong {
        /// The request's length.
        len: u32,
    },
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// The server's greeting: magic, newstyle magic, handshake flags.
pub fn greeting() -> [u8; 18] {
    let mut g = [0u8; 18];
    g[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    g[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    g[16..].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    g
}

/// What the client's flags asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFlags {
    /// The client speaks fixed newstyle.
    pub fixed_newstyle: bool,
    /// No 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
    pub no_zeroes: bool,
}

/// Parses the client flags; unknown bits are an error (the protocol says drop the session).
pub fn parse_client_flags(b: [u8; CLIENT_FLAGS_LEN]) -> Result<ClientFlags, ProtoError> {
    let f = u32::from_be_bytes(b);
    if f & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(ProtoError::ClientFlags(f));
    }
    Ok(ClientFlags {
        fixed_newstyle: f & FLAG_C_FIXED_NEWSTYLE != 0,
        no_zeroes: f & FLAG_C_NO_ZEROES != 0,
    })
}

/// An option header: which option, and how many data bytes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// The option (`OPT_*`).
    pub option: u32,
    /// Length of its data (at most [`MAX_OPTION_DATA`]).
    pub len: u32,
}

/// Parses an option header; a bad magic or overlong data is an error.
pub fn parse_option_header(b: [u8; OPTION_HEADER_LEN]) -> Result<OptionHeader, ProtoError> {
    let magic = be_u64(&b[..8]);
    if magic != IHAVEOPT {
        return Err(ProtoError::Magic {
            found: magic,
            expected: IHAVEOPT,
        });
    }
    let option = be_u32(&b[8..12]);
    let len = be_u32(&b[12..16]);
    if len > MAX_OPTION_DATA {
        return Err(ProtoError::OptionTooLong { option, len });
    }
    Ok(OptionHeader { option, len })
}

/// The data of `NBD_OPT_INFO` / `NBD_OPT_GO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    /// The export asked for (`""`: the default).
    pub name: Vec<u8>,
    /// The information types asked for.
    pub requests: Vec<u16>,
}

/// Parses `NBD_OPT_INFO`/`NBD_OPT_GO` data; `None` when the lengths inside do not add up to the
/// data (the reply is then `NBD_REP_ERR_INVALID`).
pub fn parse_info_request(data: &[u8]) -> Option<InfoRequest> {
    let name_len = usize::try_from(be_u32(data.get(..4)?)).ok()?;
    let rest = &data[4..];
    if name_len > rest.len() {
        return None;
    }
    let (name, rest) = rest.split_at(name_len);
    let count = usize::from(be_u16(rest.get(..2)?));
    let list = &rest[2..];
    if list.len() != count * 2 {
        return None;
    }
    Some(InfoRequest {
        name: name.to_vec(),
        requests: list.chunks_exact(2).map(be_u16).collect(),
    })
}

/// An option reply: header and data.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + data.len());
    v.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&reply.to_be_bytes());
    // Callers build data from bounded strings and fixed fields: far below u32::MAX.
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// `NBD_INFO_EXPORT`: size and transmission flags.
pub fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut v = INFO_EXPORT.to_be_bytes().to_vec();
    v.extend_from_slice(&size.to_be_bytes());
    v.extend_from_slice(&flags.to_be_bytes());
    v
}

/// `NBD_INFO_BLOCK_SIZE`: minimum, preferred and maximum payload size.
pub fn info_block_size(minimum: u32, preferred: u32, maximum: u32) -> Vec<u8> {
    let mut v = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
    for n in [minimum, preferred, maximum] {
        v.extend_from_slice(&n.to_be_bytes());
    }
    v
}

/// `NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION`: a string, cut to [`MAX_STRING`] bytes.
pub fn info_string(kind: u16, s: &str) -> Vec<u8> {
    let mut v = kind.to_be_bytes().to_vec();
    v.extend_from_slice(truncate(s.as_bytes()));
    v
}

/// `NBD_REP_SERVER` data: the name, then a description for people.
pub fn rep_server(name: &str, description: &str) -> Vec<u8> {
    let name = truncate(name.as_bytes());
    let mut v = (name.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(name);
    v.extend_from_slice(truncate(description.as_bytes()));
    v
}

/// The reply to `NBD_OPT_EXPORT_NAME`: size, transmission flags, and 124 zeroes unless the
/// client asked for none.
pub fn export_name_reply(size: u64, flags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut v = size.to_be_bytes().to_vec();
    v.extend_from_slice(&flags.to_be_bytes());
    if !no_zeroes {
        v.extend_from_slice(&[0u8; 124]);
    }
    v
}

fn truncate(s: &[u8]) -> &[u8] {
    &s[..s.len().min(MAX_STRING)]
}

/// A transmission request (the write payload, if any, follows it on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: u16,
    /// Command (`CMD_*`).
    pub command: u16,
    /// The client's opaque cookie, echoed in the reply.
    pub cookie: u64,
    /// Offset in the export.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
}

impl Request {
    /// Bytes of payload that follow the header on the wire (only writes carry any).
    pub fn payload_len(&self) -> u32 {
        if self.command == CMD_WRITE {
            self.len
        } else {
            0
        }
    }
}

/// Parses a request header. A bad magic, or a write payload over [`MAX_PAYLOAD`] (which the
/// server would have to swallow), is an error; everything else is answered by the command.
pub fn parse_request(b: [u8; REQUEST_LEN]) -> Result<Request, ProtoError> {
    let magic = be_u32(&b[..4]);
    if magic != REQUEST_MAGIC {
        return Err(ProtoError::Magic {
            found: u64::from(magic),
            expected: u64::from(REQUEST_MAGIC),
        });
    }
    let req = Request {
        flags: be_u16(&b[4..6]),
        command: be_u16(&b[6..8]),
        cookie: be_u64(&b[8..16]),
        offset: be_u64(&b[16..24]),
        len: be_u32(&b[24..28]),
    };
    if req.payload_len() > MAX_PAYLOAD {
        return Err(ProtoError::PayloadTooLong { len: req.len });
    }
    Ok(req)
}

/// A request header as a client sends it (for tests and the fuzz target).
pub fn encode_request(r: &Request) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    b[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&r.flags.to_be_bytes());
    b[6..8].copy_from_slice(&r.command.to_be_bytes());
    b[8..16].copy_from_slice(&r.cookie.to_be_bytes());
    b[16..24].copy_from_slice(&r.offset.to_be_bytes());
    b[24..28].copy_from_slice(&r.len.to_be_bytes());
    b
}

/// A simple reply header (read data, if any, follows it).
pub fn simple_reply(cookie: u64, error: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// A structured reply chunk header for `len` payload bytes.
pub fn chunk_header(cookie: u64, flags: u16, kind: u16, len: u32) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..].copy_from_slice(&len.to_be_bytes());
    b
}

/// The last chunk of a read, with the data to follow: header and offset of an
/// `NBD_REPLY_TYPE_OFFSET_DATA` chunk of `len` bytes (at most [`MAX_PAYLOAD`]).
pub fn data_chunk_header(cookie: u64, offset: u64, len: u32) -> [u8; 28] {
    let mut b = [0u8; 28];
    b[..20].copy_from_slice(&chunk_header(
        cookie,
        REPLY_FLAG_DONE,
        REPLY_TYPE_OFFSET_DATA,
        len + 8,
    ));
    b[20..].copy_from_slice(&offset.to_be_bytes());
    b
}

/// A final error chunk: `NBD_REPLY_TYPE_ERROR_OFFSET` when the failing offset is known,
/// else `NBD_REPLY_TYPE_ERROR`, with a message for people.
pub fn error_chunk(cookie: u64, error: u32, message: &str, offset: Option<u64>) -> Vec<u8> {
    let msg = truncate(message.as_bytes());
    let mut payload = error.to_be_bytes().to_vec();
    payload.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    payload.extend_from_slice(msg);
    let kind = match offset {
        Some(o) => {
            payload.extend_from_slice(&o.to_be_bytes());
            REPLY_TYPE_ERROR_OFFSET
        }
        None => REPLY_TYPE_ERROR,
    };
    let mut v = chunk_header(cookie, REPLY_FLAG_DONE, kind, payload.len() as u32).to_vec();
    v.extend_from_slice(&payload);
    v
}

/// A final, empty chunk (`NBD_REPLY_TYPE_NONE`): a successful reply with no data.
pub fn none_chunk(cookie: u64) -> [u8; 20] {
    chunk_header(cookie, REPLY_FLAG_DONE, REPLY_TYPE_NONE, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_is_nbdmagic_ihaveopt_and_flags() {
        let g = greeting();
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(&g[16..], &[0, 3]);
    }

    #[test]
    fn client_flags_unknown_bits_are_refused() {
        assert_eq!(
            parse_client_flags([0, 0, 0, 3]),
            Ok(ClientFlags {
                fixed_newstyle: true,
                no_zeroes: true
            })
        );
        assert_eq!(
            parse_client_flags([0, 0, 0, 4]),
            Err(ProtoError::ClientFlags(4))
        );
    }

    #[test]
    fn option_header_checks_magic_and_length() {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(b"IHAVEOPT");
        b[8..12].copy_from_slice(&OPT_GO.to_be_bytes());
        b[12..].copy_from_slice(&10u32.to_be_bytes());
        assert_eq!(
            parse_option_header(b),
            Ok(OptionHeader {
                option: OPT_GO,
                len: 10
            })
        );
        b[12..].copy_from_slice(&(MAX_OPTION_DATA + 1).to_be_bytes());
        assert!(matches!(
            parse_option_header(b),
            Err(ProtoError::OptionTooLong { .. })
        ));
        b[0] = b'X';
        assert!(matches!(
            parse_option_header(b),
            Err(ProtoError::Magic { .. })
        ));
    }

    #[test]
    fn info_request_lengths_must_add_up() {
        // name "ab", two requests: 3 and 1.
        let ok = [0, 0, 0, 2, b'a', b'b', 0, 2, 0, 3, 0, 1];
        assert_eq!(
            parse_info_request(&ok),
            Some(InfoRequest {
                name: b"ab".to_vec(),
                requests: vec![3, 1]
            })
        );
        assert_eq!(parse_info_request(&ok[..11]), None);
        assert_eq!(parse_info_request(&[0, 0, 0, 9, 0, 0]), None);
        assert_eq!(parse_info_request(&[0xff, 0xff, 0xff, 0xff, 0, 0]), None);
        assert_eq!(parse_info_request(&[]), None);
        let mut trailing = ok.to_vec();
        trailing.push(0);
        assert_eq!(parse_info_request(&trailing), None);
    }

    #[test]
    fn requests_round_trip_and_writes_are_bounded() {
        let r = Request {
            flags: 1,
            command: CMD_READ,
            cookie: 0x1122_3344_5566_7788,
            offset: 4096,
            len: u32::MAX,
        };
        assert_eq!(parse_request(encode_request(&r)), Ok(r));
        let w = Request {
            command: CMD_WRITE,
            ..r
        };
        assert_eq!(
            parse_request(encode_request(&w)),
            Err(ProtoError::PayloadTooLong { len: u32::MAX })
        );
        let mut bad = encode_request(&r);
        bad[0] ^= 1;
        assert!(matches!(parse_request(bad), Err(ProtoError::Magic { .. })));
    }

    #[test]
    fn error_chunk_layout() {
        let c = error_chunk(7, EIO, "bad", Some(2048));
        assert_eq!(&c[..4], &STRUCTURED_REPLY_MAGIC.to_be_bytes());
        assert_eq!(be_u16(&c[4..6]), REPLY_FLAG_DONE);
        assert_eq!(be_u16(&c[6..8]), REPLY_TYPE_ERROR_OFFSET);
        assert_eq!(be_u64(&c[8..16]), 7);
        assert_eq!(be_u32(&c[16..20]) as usize, c.len() - 20);
        assert_eq!(be_u32(&c[20..24]), EIO);
        assert_eq!(be_u16(&c[24..26]), 3);
        assert_eq!(&c[26..29], b"bad");
        assert_eq!(be_u64(&c[29..37]), 2048);
    }
}
