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
