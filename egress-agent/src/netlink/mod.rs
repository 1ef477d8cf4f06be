//! Netlink, spoken in-process: the agent configures links, routes and
//! neighbours itself (NETLINK_ROUTE, in `link`, `route` and `neighbour`)
//! and lists and aborts a pod's connections (NETLINK_SOCK_DIAG, in
//! `join::connections`), so the image needs no `ip` binary and a refusal
//! comes back as the kernel's own errno and message.
//!
//! One socket, one request at a time: every request either waits for its
//! acknowledgement or reads its dump to the end before the next is sent.
//! Each carries its own sequence number, and answers to any other (left
//! by a request whose reading was cut short) are passed over.
pub mod link;
pub mod neighbour;
pub mod route;

use std::{
    cell::Cell,
    fmt, io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
const NLMSG_HEADER_LEN: usize = 16;
const NLA_HEADER_LEN: usize = 4;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | (1 << 14));
/// A dump that changed while it was read (NLM_F_DUMP_INTR).
const NLM_F_DUMP_INTR: u16 = 0x10;
/// An error that holds only the request's header (NETLINK_CAP_ACK).
const NLM_F_CAPPED: u16 = 0x100;
/// An error followed by extended-ack attributes (NETLINK_EXT_ACK).
const NLM_F_ACK_TLVS: u16 = 0x200;

// linux/netlink.h: socket options, and the extended acknowledgement.
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Flags of a request that changes something and waits for the answer.
pub const CHANGE: u16 = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
/// Of one that creates, or replaces what is there.
pub const CREATE_OR_REPLACE: u16 = CHANGE | (libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16;
/// Of one that creates, and fails if it exists.
pub const CREATE_NEW: u16 = CHANGE | (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;

/// A request the kernel refused: its errno and, on kernels that give one,
/// its own one-line reason ("Nexthop has invalid gateway", ...).
#[derive(Debug)]
pub struct Refused {
    pub errno: i32,
    pub reason: Option<String>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.errno))?;
        match &self.reason {
            Some(reason) => write!(f, " ({reason})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for Refused {}

impl From<io::Error> for Refused {
    fn from(e: io::Error) -> Refused {
        Refused { errno: e.raw_os_error().unwrap_or(libc::EIO), reason: None }
    }
}

pub struct Netlink {
    socket: OwnedFd,
    /// The sequence number of the last request sent.
    sequence: Cell<u32>,
}

impl Netlink {
    pub fn open(protocol: libc::c_int) -> io::Result<Netlink> {
        // SAFETY: plain socket(2); the result is checked before it is owned.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        let netlink = Netlink { socket: unsafe { OwnedFd::from_raw_fd(fd) }, sequence: Cell::new(0) };
        // Errors without our request echoed back, and with the kernel's
        // reason where it has one. Both are optional: without them the
        // errno alone is reported.
        netlink.set_option(NETLINK_CAP_ACK);
        netlink.set_option(NETLINK_EXT_ACK);
        Ok(netlink)
    }

    /// A route netlink socket, named in the error if it cannot be opened.
    pub fn route() -> anyhow::Result<Netlink> {
        use anyhow::Context;
        Netlink::open(libc::NETLINK_ROUTE).context("opening a route netlink socket")
    }

    fn set_option(&self, option: libc::c_int) {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt(2) with a pointer to a c_int we own and its size.
        unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                SOL_NETLINK,
                option,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }

    /// Sends one message of `kind` with `payload` (to the kernel), under
    /// a new sequence number; `receive` then yields only its answers.
    pub fn send(&self, kind: u16, flags: u16, payload: &[u8]) -> io::Result<()> {
        self.sequence.set(self.sequence.get().wrapping_add(1));
        let mut message = Vec::with_capacity(NLMSG_HEADER_LEN + payload.len());
        message.extend_from_slice(&((NLMSG_HEADER_LEN + payload.len()) as u32).to_ne_bytes());
        message.extend_from_slice(&kind.to_ne_bytes());
        message.extend_from_slice(&flags.to_ne_bytes());
        message.extend_from_slice(&self.sequence.get().to_ne_bytes());
        message.extend_from_slice(&0u32.to_ne_bytes()); // the kernel
        message.extend_from_slice(payload);
        // SAFETY: send(2) of a buffer we own, of its own length.
        let sent = unsafe { libc::send(self.socket.as_raw_fd(), message.as_ptr().cast(), message.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One datagram, retried when a signal interrupts the wait.
    fn receive_datagram(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: recv(2) into a buffer we own, of its own length.
            let n = unsafe { libc::recv(self.socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// The answers to the last request in the next datagram that has any
    /// (answers to earlier requests are passed over).
    pub fn receive<'b>(&self, buf: &'b mut [u8]) -> io::Result<Vec<Message<'b>>> {
        let sequence = self.sequence.get();
        let n = loop {
            let n = self.receive_datagram(buf)?;
            if messages(&buf[..n]).any(|m| m.sequence == sequence) {
                break n;
            }
        };
        let datagram: &'b [u8] = &buf[..n];
        Ok(messages(datagram).filter(|m| m.sequence == sequence).collect())
    }

    /// Sends a request with `flags` (which include NLM_F_ACK) and waits
    /// for its acknowledgement.
    pub fn request(&self, kind: u16, flags: u16, payload: &[u8]) -> Result<(), Refused> {
        self.send(kind, flags, payload)?;
        self.acknowledged()
    }

    /// Waits for the acknowledgement of a request sent with NLM_F_ACK.
    pub fn acknowledged(&self) -> Result<(), Refused> {
        let mut buf = [0u8; 4096];
        for message in self.receive(&mut buf)? {
            if message.kind == NLMSG_ERROR {
                return refusal(&message).map_or(Ok(()), Err);
            }
        }
        Err(Refused { errno: libc::EBADMSG, reason: Some("no netlink acknowledgement".into()) })
    }

    /// Sends a dump request and returns the payload of every answer of
    /// `kind`, to the end of the dump.
    pub fn dump(&self, kind: u16, payload: &[u8], answer: u16) -> Result<Vec<Vec<u8>>, Refused> {
        self.send(kind, (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16, payload)?;
        let mut found = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            for message in self.receive(&mut buf)? {
                if message.flags & NLM_F_DUMP_INTR != 0 {
                    // The table changed while it was read: the list may
                    // miss entries. The caller's next attempt reads it anew.
                    return Err(Refused {
                        errno: libc::EAGAIN,
                        reason: Some("the list changed while read".into()),
                    });
                }
                match message.kind {
                    // NLMSG_DONE carries the dump's own result.
                    NLMSG_DONE => {
                        return match error_code(message.payload) {
                            code if code < 0 => Err(Refused { errno: -code, reason: None }),
                            _ => Ok(found),
                        }
                    }
                    NLMSG_ERROR => {
                        if let Some(refused) = refusal(&message) {
                            return Err(refused);
                        }
                    }
                    k if k == answer => found.push(message.payload.to_vec()),
                    _ => {}
                }
            }
        }
    }
}

/// The refusal an NLMSG_ERROR message carries; None for an
/// acknowledgement. Its payload is the errno and the request's header,
/// then the rest of the request unless capped (NETLINK_CAP_ACK), then the
/// extended-ack attributes if flagged.
fn refusal(message: &Message) -> Option<Refused> {
    let code = error_code(message.payload);
    if code == 0 {
        return None;
    }
    let request_len = match message.flags & NLM_F_CAPPED {
        0 => message
            .payload
            .get(4..8)
            .map_or(NLMSG_HEADER_LEN, |l| u32::from_ne_bytes(l.try_into().unwrap()) as usize),
        _ => NLMSG_HEADER_LEN,
    };
    let reason = (message.flags & NLM_F_ACK_TLVS != 0)
        .then(|| message.payload.get(4 + aligned(request_len)..))
        .flatten()
        .and_then(|tlvs| {
            attributes(tlvs).find(|(kind, _)| *kind == NLMSGERR_ATTR_MSG).map(|(_, text)| c_string(text))
        });
    Some(Refused { errno: -code, reason })
}

/// One netlink message of a datagram.
#[derive(Debug)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub sequence: u32,
    pub payload: &'a [u8],
}

/// Each netlink message in a datagram.
pub fn messages(mut datagram: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        if datagram.len() < NLMSG_HEADER_LEN {
            return None;
        }
        let len = u32::from_ne_bytes(datagram[..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(datagram[4..6].try_into().unwrap());
        let flags = u16::from_ne_bytes(datagram[6..8].try_into().unwrap());
        let sequence = u32::from_ne_bytes(datagram[8..12].try_into().unwrap());
        if len < NLMSG_HEADER_LEN || len > datagram.len() {
            return None;
        }
        let payload = &datagram[NLMSG_HEADER_LEN..len];
        datagram = &datagram[aligned(len).min(datagram.len())..];
        Some(Message { kind, flags, sequence, payload })
    })
}

/// The (negative errno) code of an NLMSG_ERROR payload; 0 is success.
fn error_code(payload: &[u8]) -> i32 {
    payload.get(..4).map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()))
}

/// One netlink attribute, padded to four bytes.
pub fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(NLA_HEADER_LEN + value.len() + 3);
    out.extend_from_slice(&((NLA_HEADER_LEN + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(aligned(out.len()), 0);
    out
}

/// An attribute that holds `inner` attributes.
pub fn nested(kind: u16, inner: &[Vec<u8>]) -> Vec<u8> {
    attribute(kind | NLA_F_NESTED, &inner.concat())
}

/// A string attribute's value: the text and its NUL.
pub fn string_value(text: &str) -> Vec<u8> {
    [text.as_bytes(), &[0]].concat()
}

/// The (type, value) of each attribute in `bytes`, the nested flag masked off.
pub fn attributes(mut bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if bytes.len() < NLA_HEADER_LEN {
            return None;
        }
        let len = u16::from_ne_bytes([bytes[0], bytes[1]]) as usize;
        let kind = u16::from_ne_bytes([bytes[2], bytes[3]]) & NLA_TYPE_MASK;
        if len < NLA_HEADER_LEN || len > bytes.len() {
            return None;
        }
        let value = &bytes[NLA_HEADER_LEN..len];
        bytes = &bytes[aligned(len).min(bytes.len())..];
        Some((kind, value))
    })
}

/// A string attribute's text, without its NUL.
fn c_string(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

fn aligned(len: usize) -> usize {
    (len + 3) & !3
}

/// Reads a native-endian u32 attribute value.
fn u32_value(value: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(value.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_read_back_what_was_written_nested_flag_masked() {
        let inner = [attribute(1, b"vxlan\0"), attribute(2, &7u32.to_ne_bytes())];
        let bytes = [nested(18, &inner), attribute(4, &1450u32.to_ne_bytes())].concat();
        let read: Vec<_> = attributes(&bytes).collect();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].0, 18);
        assert_eq!(read[1], (4, &1450u32.to_ne_bytes()[..]));
        let inner: Vec<_> = attributes(read[0].1).collect();
        assert_eq!(c_string(inner[0].1), "vxlan");
        assert_eq!(u32_value(inner[1].1), Some(7));
    }

    #[test]
    fn a_refusal_carries_the_kernels_reason() {
        let mut payload = (-libc::EINVAL).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0u8; NLMSG_HEADER_LEN]);
        payload.extend_from_slice(&attribute(NLMSGERR_ATTR_MSG, b"Nexthop has invalid gateway\0"));
        let message = |payload, flags| Message { kind: NLMSG_ERROR, flags, sequence: 1, payload };
        let refused = refusal(&message(&payload, NLM_F_CAPPED | NLM_F_ACK_TLVS)).unwrap();
        assert_eq!(refused.errno, libc::EINVAL);
        assert_eq!(refused.to_string(), "Invalid argument (os error 22) (Nexthop has invalid gateway)");
        // Without the flag there are no attributes to read.
        assert!(refusal(&message(&payload, NLM_F_CAPPED)).unwrap().reason.is_none());
        assert!(refusal(&message(&0i32.to_ne_bytes(), 0)).is_none());
    }
}
