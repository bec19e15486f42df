//! Through `connect`, over 127.0.0.1: plain TCP, STLS refused or abused,
//! nobody listening.

use super::*;

#[tokio::test]
async fn connect_over_tcp() {
    let (port, server) =
        listener_with(with(user_login(), vec![c("QUIT"), s("+OK\r\n"), Step::Eof])).await;
    let sess = connect(&loopback(port, TlsMode::None)).await.unwrap();
    assert!(!sess.is_tls());
    sess.quit().await.unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn stls_refused_is_an_error_not_a_downgrade() {
    let (port, server) = listener_with(vec![
        s("+OK ready\r\n"),
        c("CAPA"),
        s("+OK\r\nUSER\r\n.\r\n"),
        c("STLS"),
        s("-ERR not here\r\n"),
        Step::Eof,
    ])
    .await;
    let e = match connect(&loopback(port, TlsMode::Starttls)).await {
        Ok(_) => panic!("must fail"),
        Err(e) => e,
    };
    assert!(
        matches!(e.kind(), Pop3ErrorKind::Unsupported { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("STLS refused"), "{e}");
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn bytes_injected_after_stls_reply_are_refused() {
    let (port, _server) = listener_with(vec![
        s("+OK ready\r\n"),
        c("CAPA"),
        s("+OK\r\nSTLS\r\n.\r\n"),
        c("STLS"),
        s("+OK Begin TLS\r\n+OK injected\r\n"),
        Step::Hang,
    ])
    .await;
    let e = match connect(&loopback(port, TlsMode::Starttls)).await {
        Ok(_) => panic!("must fail"),
        Err(e) => e,
    };
    assert!(matches!(e.kind(), Pop3ErrorKind::Protocol { .. }), "{e:?}");
}

#[tokio::test]
async fn connection_refused_is_a_transient_net_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let e = match connect(&loopback(port, TlsMode::None)).await {
        Ok(_) => panic!("must fail"),
        Err(e) => e,
    };
    assert!(matches!(e.kind(), Pop3ErrorKind::Net(_)), "{e:?}");
    assert!(e.is_transient());
}
