// Node's answer, for the benchmark: `cluster` with WORKERS workers (0: a single
// process), the same response bytes as `hello`. On SIGTERM each process prints
// its totals in multinode's format, so one parser reads both.
const cluster = require("node:cluster");
const http = require("node:http");

const workers = Number(process.env.WORKERS || 0);
const port = Number(process.env.PORT || 8080); // 0: a free port, shared by the workers

function serve(id) {
  let connections = 0;
  let requests = 0;
  const server = http.createServer((req, res) => {
    requests++;
    res.end(`hello from node ${id} (pid ${process.pid})\n`);
  });
  server.on("connection", () => connections++);
  server.listen(port, "127.0.0.1", () => {
    if (cluster.isPrimary) console.error(`listening on http://127.0.0.1:${server.address().port}`);
    else process.send(server.address().port);
  });
  process.on("SIGTERM", () => {
    console.error(`node totals node=${id} connections=${connections} requests=${requests}`);
    process.exit(0);
  });
}

if (workers === 0) {
  serve(0);
} else if (cluster.isPrimary) {
  let ready = 0;
  for (let i = 0; i < workers; i++) {
    const worker = cluster.fork({ NODE_ID: String(i + 1) });
    worker.on("message", (bound) => {
      if (++ready === workers) console.error(`listening on http://127.0.0.1:${bound}`);
    });
  }
  process.on("SIGTERM", () => {
    for (const id in cluster.workers) cluster.workers[id].process.kill("SIGTERM");
    setTimeout(() => process.exit(0), 500);
  });
} else {
  serve(Number(process.env.NODE_ID));
}
