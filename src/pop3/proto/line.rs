//! Finding a line in bytes read ahead, without ever buffering more than a
//! bound.
//!
//! Why apart: both status lines and listing lines come through here, and a
//! server that never sends a line end must cost us a bounded buffer and an
//! error, never memory that grows.

use super::ProtoError;

/// Looks for a complete line at the start of `data`. Returns the length of
/// the line including its line end (LF or CRLF), `None` when more bytes are
/// needed, or an error once `max` bytes of content have gone by without a
/// line end — so a hostile server cannot make us buffer more than `max + 2`.
pub fn find_line(data: &[u8], max: usize) -> Result<Option<usize>, ProtoError> {
    let window_len = data.len().min(max.saturating_add(2));
    let window = data.get(..window_len).unwrap_or(data);
    match window.iter().position(|&b| b == b'\n') {
        Some(lf) => {
            let content = strip_line_end(window.get(..lf).unwrap_or_default());
            if content.len() > max {
                return Err(ProtoError::LineTooLong { max });
            }
            Ok(Some(lf.saturating_add(1)))
        }
        None if window_len >= max.saturating_add(2) => Err(ProtoError::LineTooLong { max }),
        None => Ok(None),
    }
}

/// Removes a trailing CR (the LF is already gone) or a trailing CRLF / LF.
pub fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::MAX_STATUS_LINE;
    use super::*;

    #[test]
    fn find_line_bounds() {
        assert_eq!(find_line(b"+OK\r\nrest", 10), Ok(Some(5)));
        assert_eq!(find_line(b"+OK\nrest", 10), Ok(Some(4)));
        assert_eq!(find_line(b"+OK", 10), Ok(None));
        assert_eq!(find_line(&[b'a'; 10], 10), Ok(None));
        assert_eq!(find_line(b"aaaaaaaaaa\r\n", 10), Ok(Some(12)));
        assert_eq!(
            find_line(b"aaaaaaaaaaa\r\n", 10),
            Err(ProtoError::LineTooLong { max: 10 })
        );
        assert_eq!(
            find_line(&[b'a'; 12], 10),
            Err(ProtoError::LineTooLong { max: 10 })
        );
        let huge = vec![b'x'; MAX_STATUS_LINE * 4];
        assert!(find_line(&huge, MAX_STATUS_LINE).is_err());
        assert_eq!(strip_line_end(b"abc\r\n"), b"abc");
        assert_eq!(strip_line_end(b"abc\n"), b"abc");
    }
}
