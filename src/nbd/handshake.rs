//! The fixed newstyle handshake, server side: greeting, client flags, then options until the
//! client picks the export (`NBD_OPT_GO`, `NBD_OPT_EXPORT_NAME`) or leaves (`NBD_OPT_ABORT`).
//!
//! Options served: `GO`/`INFO` (export size and flags, block sizes, name, description), `LIST`,
//! `ABORT`, `STRUCTURED_REPLY`, `EXPORT_NAME`. Others (TLS, metadata contexts, extended headers)
//! get `NBD_REP_ERR_UNSUP`/`POLICY` and the session goes on.
//!
//! Must never answer for an export it does not serve, and never read more than
//! [`proto::MAX_OPTION_DATA`] bytes of one option or more than [`MAX_OPTIONS`] options.

use std::io::{self, Read, Write};

use super::export::ExportInfo;
use super::proto::{self, ProtoError};
use super::NbdError;

/// Options one client may send before it must choose; more is a denial of service.
pub const MAX_OPTIONS: usize = 128;

/// Transmission flags of every blkcache export: read-only; its cache is shared by every
/// connection, so a client may use several (`NBD_FLAG_CAN_MULTI_CONN`).
pub const TRANSMISSION_FLAGS: u16 =
    proto::FLAG_HAS_FLAGS | proto::FLAG_READ_ONLY | proto::FLAG_CAN_MULTI_CONN;

/// How the handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// On to transmission; `structured`: the client negotiated structured replies.
    Transmission {
        /// Reads are answered with structured reply chunks.
        structured: bool,
    },
    /// The client aborted (`NBD_OPT_ABORT`): close the connection.
    Aborted,
}

/// Runs the handshake on `conn` for `export`.
pub fn negotiate<S: Read + Write>(conn: &mut S, export: &ExportInfo) -> Result<Outcome, NbdError> {
    conn.write_all(&proto::greeting())?;
    conn.flush()?;
    let mut flags = [0u8; proto::CLIENT_FLAGS_LEN];
    conn.read_exact(&mut flags)?;
    let client = proto::parse_client_flags(flags)?;
    let mut structured = false;
    for _ in 0..MAX_OPTIONS {
        let mut header = [0u8; proto::OPTION_HEADER_LEN];
        conn.read_exact(&mut header)?;
        let opt = proto::parse_option_header(header)?;
        let mut data = vec![0u8; opt.len as usize];
        conn.read_exact(&mut data)?;
        let reply = |kind: u32, data: &[u8]| proto::option_reply(opt.option, kind, data);
        match opt.option {
            proto::OPT_EXPORT_NAME => {
                if !accepts(export, &data) {
                    // No way to say no to EXPORT_NAME but to hang up.
                    return Err(NbdError::UnknownExport(
                        String::from_utf8_lossy(&data).into_owned(),
                    ));
                }
                conn.write_all(&proto::export_name_reply(
                    export.size,
                    TRANSMISSION_FLAGS,
                    client.no_zeroes,
                ))?;
                conn.flush()?;
                return Ok(Outcome::Transmission { structured });
            }
            proto::OPT_ABORT => {
                // The client may already be gone: a failed ack is no error.
                let _ = conn.write_all(&reply(proto::REP_ACK, &[]));
                let _ = conn.flush();
                return Ok(Outcome::Aborted);
            }
            proto::OPT_LIST if data.is_empty() => {
                conn.write_all(&reply(
                    proto::REP_SERVER,
                    &proto::rep_server(&export.name, &export.description),
                ))?;
                conn.write_all(&reply(proto::REP_ACK, &[]))?;
            }
            proto::OPT_STRUCTURED_REPLY if data.is_empty() => {
                structured = true;
                conn.write_all(&reply(proto::REP_ACK, &[]))?;
            }
            proto::OPT_LIST | proto::OPT_STRUCTURED_REPLY => {
                conn.write_all(&reply(proto::REP_ERR_INVALID, b"this option takes no data"))?;
            }
            proto::OPT_INFO | proto::OPT_GO => {
                if info_or_go(conn, opt.option, &data, export)? && opt.option == proto::OPT_GO {
                    conn.flush()?;
                    return Ok(Outcome::Transmission { structured });
                }
            }
            proto::OPT_STARTTLS => {
                conn.write_all(&reply(
                    proto::REP_ERR_POLICY,
                    b"blkcache serves NBD without TLS",
                ))?;
            }
            _ => conn.write_all(&reply(proto::REP_ERR_UNSUP, &[]))?,
        }
        conn.flush()?;
    }
    Err(NbdError::TooManyOptions)
}

/// Whether `name` selects this export: the default (empty) name or its own.
fn accepts(export: &ExportInfo, name: &[u8]) -> bool {
    name.is_empty() || name == export.name.as_bytes()
}

/// Answers `NBD_OPT_INFO`/`NBD_OPT_GO`; true when it acknowledged the export.
fn info_or_go<S: Write>(
    conn: &mut S,
    option: u32,
    data: &[u8],
    export: &ExportInfo,
) -> io::Result<bool> {
    let reply = |kind: u32, data: &[u8]| proto::option_reply(option, kind, data);
    let Some(req) = proto::parse_info_request(data) else {
        conn.write_all(&reply(
            proto::REP_ERR_INVALID,
            b"malformed NBD_OPT_INFO/GO data",
        ))?;
        return Ok(false);
    };
    if !accepts(export, &req.name) {
        conn.write_all(&reply(proto::REP_ERR_UNKNOWN, b"no such export"))?;
        return Ok(false);
    }
    let mut infos = vec![
        proto::info_export(export.size, TRANSMISSION_FLAGS),
        // Sent whether asked for or not (allowed): reads of any alignment are served anyway.
        proto::info_block_size(export.block_size, export.block_size, proto::MAX_PAYLOAD),
    ];
    if req.requests.contains(&proto::INFO_NAME) {
        infos.push(proto::info_string(proto::INFO_NAME, &export.name));
    }
    if req.requests.contains(&proto::INFO_DESCRIPTION) {
        infos.push(proto::info_string(
            proto::INFO_DESCRIPTION,
            &export.description,
        ));
    }
    for info in infos {
        conn.write_all(&reply(proto::REP_INFO, &info))?;
    }
    conn.write_all(&reply(proto::REP_ACK, &[]))?;
    Ok(true)
}

impl From<ProtoError> for NbdError {
    fn from(e: ProtoError) -> NbdError {
        NbdError::Protocol(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client's bytes in, the server's out.
    struct Duplex<'a> {
        input: &'a [u8],
        output: Vec<u8>,
    }

    impl Read for Duplex<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Duplex<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn export() -> ExportInfo {
        ExportInfo {
            name: "blkcache".into(),
            description: "test".into(),
            size: 4096 * 2048,
            block_size: 2048,
        }
    }

    fn option(opt: u32, data: &[u8]) -> Vec<u8> {
        let mut v = b"IHAVEOPT".to_vec();
        v.extend_from_slice(&opt.to_be_bytes());
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    fn go_data(name: &[u8], infos: &[u16]) -> Vec<u8> {
        let mut v = (name.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(name);
        v.extend_from_slice(&(infos.len() as u16).to_be_bytes());
        for i in infos {
            v.extend_from_slice(&i.to_be_bytes());
        }
        v
    }

    /// An option reply: (option, reply type, data).
    type Reply = (u32, u32, Vec<u8>);

    /// Runs a handshake on `options` after the client flags; returns the outcome and the
    /// option replies as (option, reply type, data).
    fn run(flags: u32, options: &[Vec<u8>]) -> (Result<Outcome, NbdError>, Vec<Reply>) {
        let mut input = flags.to_be_bytes().to_vec();
        for o in options {
            input.extend_from_slice(o);
        }
        let mut d = Duplex {
            input: &input,
            output: Vec::new(),
        };
        let outcome = negotiate(&mut d, &export());
        assert_eq!(&d.output[..18], &proto::greeting());
        let mut replies = Vec::new();
        let mut rest = &d.output[18..];
        while rest.len() >= 20 {
            assert_eq!(&rest[..8], &proto::REPLY_MAGIC.to_be_bytes());
            let opt = u32::from_be_bytes(rest[8..12].try_into().unwrap());
            let kind = u32::from_be_bytes(rest[12..16].try_into().unwrap());
            let len = u32::from_be_bytes(rest[16..20].try_into().unwrap()) as usize;
            replies.push((opt, kind, rest[20..20 + len].to_vec()));
            rest = &rest[20 + len..];
        }
        assert!(rest.is_empty(), "stray bytes: {rest:?}");
        (outcome, replies)
    }

    #[test]
    fn go_gives_size_flags_and_block_sizes_then_transmission() {
        let (outcome, replies) = run(
            3,
            &[
                option(proto::OPT_STRUCTURED_REPLY, &[]),
                option(
                    proto::OPT_GO,
                    &go_data(b"", &[proto::INFO_BLOCK_SIZE, proto::INFO_NAME]),
                ),
            ],
        );
        assert_eq!(outcome.unwrap(), Outcome::Transmission { structured: true });
        let kinds: Vec<(u32, u32)> = replies.iter().map(|r| (r.0, r.1)).collect();
        assert_eq!(
            kinds,
            [
                (proto::OPT_STRUCTURED_REPLY, proto::REP_ACK),
                (proto::OPT_GO, proto::REP_INFO),
                (proto::OPT_GO, proto::REP_INFO),
                (proto::OPT_GO, proto::REP_INFO),
                (proto::OPT_GO, proto::REP_ACK),
            ]
        );
        assert_eq!(
            replies[1].2,
            proto::info_export(4096 * 2048, TRANSMISSION_FLAGS)
        );
        assert_eq!(
            replies[2].2,
            proto::info_block_size(2048, 2048, proto::MAX_PAYLOAD)
        );
        assert_eq!(
            replies[3].2,
            proto::info_string(proto::INFO_NAME, "blkcache")
        );
    }

    #[test]
    fn bad_options_get_errors_and_the_session_goes_on() {
        let (outcome, replies) = run(
            1,
            &[
                option(proto::OPT_LIST, b"x"),
                option(proto::OPT_GO, &go_data(b"other", &[])),
                option(proto::OPT_INFO, &[0, 0, 0, 9, 1]),
                option(proto::OPT_STARTTLS, &[]),
                option(99, b"unknown option data"),
                option(proto::OPT_LIST, &[]),
                option(proto::OPT_INFO, &go_data(b"blkcache", &[])),
                option(proto::OPT_ABORT, &[]),
            ],
        );
        assert_eq!(outcome.unwrap(), Outcome::Aborted);
        let kinds: Vec<u32> = replies.iter().map(|r| r.1).collect();
        assert_eq!(
            kinds,
            [
                proto::REP_ERR_INVALID,
                proto::REP_ERR_UNKNOWN,
                proto::REP_ERR_INVALID,
                proto::REP_ERR_POLICY,
                proto::REP_ERR_UNSUP,
                proto::REP_SERVER,
                proto::REP_ACK,
                proto::REP_INFO,
                proto::REP_INFO,
                proto::REP_ACK,
                proto::REP_ACK,
            ]
        );
        assert_eq!(replies[5].2, proto::rep_server("blkcache", "test"));
    }

    #[test]
    fn export_name_of_another_export_hangs_up_and_of_ours_replies_without_zeroes() {
        let (outcome, _) = run(1, &[option(proto::OPT_EXPORT_NAME, b"nope")]);
        assert!(matches!(outcome, Err(NbdError::UnknownExport(n)) if n == "nope"));
        let mut input = 3u32.to_be_bytes().to_vec();
        input.extend_from_slice(&option(proto::OPT_EXPORT_NAME, b""));
        let mut d = Duplex {
            input: &input,
            output: Vec::new(),
        };
        let outcome = negotiate(&mut d, &export()).unwrap();
        assert_eq!(outcome, Outcome::Transmission { structured: false });
        assert_eq!(
            &d.output[18..],
            &proto::export_name_reply(4096 * 2048, TRANSMISSION_FLAGS, true)[..]
        );
    }

    #[test]
    fn garbage_ends_the_handshake_with_an_error() {
        let (outcome, _) = run(0x8000_0000, &[]);
        assert!(matches!(outcome, Err(NbdError::Protocol(_))));
        let (outcome, _) = run(1, &[b"NOTIHAVEOPT-and-then-some".to_vec()]);
        assert!(matches!(outcome, Err(NbdError::Protocol(_))));
        let mut huge = b"IHAVEOPT".to_vec();
        huge.extend_from_slice(&proto::OPT_GO.to_be_bytes());
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        let (outcome, _) = run(1, &[huge]);
        assert!(matches!(outcome, Err(NbdError::Protocol(_))));
        let (outcome, _) = run(1, &vec![option(99, &[]); MAX_OPTIONS + 1]);
        assert!(matches!(outcome, Err(NbdError::TooManyOptions)));
        // Cut short mid-option: an I/O error, never a panic.
        let (outcome, _) = run(
            1,
            &[option(proto::OPT_GO, &go_data(b"", &[]))[..10].to_vec()],
        );
        assert!(matches!(outcome, Err(NbdError::Io(_))));
    }
}
