//! The listening half of a test server that can be killed and started again
//! on the same port, as the Consul and Vault test servers are: connections are
//! accepted on a thread of their own and each served on another; stopping
//! ends the accepting and cuts every open connection, as a dying server does.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Accepts connections on `addr` until stopped.
pub struct Acceptor {
    addr: SocketAddr,
    /// Open connections, to cut on stop.
    conns: Arc<Mutex<Vec<TcpStream>>>,
    running: Mutex<Option<Running>>,
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Acceptor {
    /// Binds a free port of 127.0.0.1; nothing is accepted before
    /// [`Acceptor::serve`].
    pub fn bind() -> (Acceptor, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test server");
        let addr = listener.local_addr().expect("local address");
        let acceptor = Acceptor {
            addr,
            conns: Arc::default(),
            running: Mutex::new(None),
        };
        (acceptor, listener)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts on `listener`, serving each connection (no Nagle delay) on a
    /// thread of its own with `serve`.
    pub fn serve(&self, listener: TcpListener, serve: impl Fn(TcpStream) + Clone + Send + 'static) {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let conns = Arc::clone(&self.conns);
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let _ = conn.set_nodelay(true);
                if let Ok(clone) = conn.try_clone() {
                    lock(&conns).push(clone);
                }
                let serve = serve.clone();
                thread::spawn(move || serve(conn));
            }
        });
        *lock(&self.running) = Some(Running { stop, thread });
    }

    /// Stops accepting and closes the listening socket (connections already
    /// open stay until [`Acceptor::cut_connections`]).
    pub fn stop_accepting(&self) {
        if let Some(running) = lock(&self.running).take() {
            running.stop.store(true, Ordering::SeqCst);
            // Wake the accept call; the loop sees the flag and drops the socket.
            let _ = TcpStream::connect(self.addr);
            let _ = running.thread.join();
        }
    }

    /// Cuts every connection accepted so far.
    pub fn cut_connections(&self) {
        for conn in std::mem::take(&mut *lock(&self.conns)) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }

    /// Binds the same port again, waiting up to 5 s for it to be free.
    pub fn rebind(&self) -> TcpListener {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match TcpListener::bind(self.addr) {
                Ok(listener) => return listener,
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("rebind {}: {e}", self.addr),
            }
        }
    }
}

/// A poisoned lock is a test that already failed elsewhere: go on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
