import net from "node:net";

/** A TCP proxy in front of a real server, that the test can cut (as a network partition or a crash would) and restore. */
export class CuttableProxy {
  #listener: net.Server | undefined;
  readonly #sockets = new Set<net.Socket>();
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  async open(): Promise<void> {
    const listener = net.createServer((socket) => {
      const upstream = net.connect(this.target.port, this.target.host);
      for (const end of [socket, upstream]) {
        this.#sockets.add(end);
        end.once("close", () => this.#sockets.delete(end));
        end.on("error", () => (end === socket ? upstream : socket).destroy());
      }
      socket.pipe(upstream).pipe(socket);
    });
    await new Promise<void>((resolve, reject) => {
      listener.once("error", reject);
      listener.listen(this.port, "127.0.0.1", () => resolve());
    });
    this.port = (listener.address() as net.AddressInfo).port;
    this.#listener = listener;
  }

  /** Refuses new connections and breaks every open one. */
  async cut(): Promise<void> {
    const closed = new Promise<void>((resolve) => (this.#listener ? this.#listener.close(() => resolve()) : resolve()));
    this.#listener = undefined;
    for (const socket of this.#sockets) socket.destroy();
    await closed;
  }
}

/** A proxy in front of the database at `url`, open, and the URL that goes through it. */
export async function databaseBehindProxy(url: string): Promise<{ proxy: CuttableProxy; databaseUrl: string }> {
  const database = new URL(url);
  const proxy = new CuttableProxy({ host: database.hostname, port: Number(database.port || 5432) });
  await proxy.open();
  database.host = `127.0.0.1:${proxy.port}`;
  return { proxy, databaseUrl: database.toString() };
}
