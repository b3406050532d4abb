//! A TCP forwarder the test can cut or freeze, to make a real server (KMS, Redis) unreachable
//! and back.

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Open,
    /// New connections are closed at once, open ones closed.
    Cut,
    /// Connections (open and new) stay open but nothing passes: a dropped route.
    Frozen,
}

pub struct TcpProxy {
    pub url: String,
    /// `host:port`, for non-HTTP clients (Redis).
    pub addr: String,
    mode: watch::Sender<Mode>,
}

impl TcpProxy {
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (mode, _) = watch::channel(Mode::Open);
        let modes = mode.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut mode = modes.subscribe();
                let upstream = upstream.clone();
                let current = *mode.borrow_and_update();
                match current {
                    Mode::Cut => continue, // dropped: connection closed at once
                    Mode::Frozen => {
                        tokio::spawn(async move {
                            let _held = client;
                            let _ = mode.wait_for(|mode| *mode != Mode::Frozen).await;
                        });
                    }
                    Mode::Open => {
                        tokio::spawn(async move {
                            let Ok(mut server) = TcpStream::connect(&upstream).await else {
                                return;
                            };
                            let mut client = client;
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                _ = mode.wait_for(|mode| *mode != Mode::Open) => {}
                            }
                            // Frozen: hold both ends silent until the freeze ends, then close.
                            let _ = mode.wait_for(|mode| *mode != Mode::Frozen).await;
                        });
                    }
                }
            }
        });
        Self {
            url: format!("http://{addr}"),
            addr: addr.to_string(),
            mode,
        }
    }

    /// Refuses new connections and closes open ones (pooled connections included).
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Keeps connections open but passes nothing, as a dropped route or a frozen server would.
    pub fn freeze(&self) {
        self.mode.send_replace(Mode::Frozen);
    }

    /// Forwards new connections again (connections held by a freeze are closed).
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Open);
    }
}
