// The post step: stops what main.js started, even when the job failed.
const { spawnSync } = require("node:child_process");
const path = require("node:path");

const script = path.join(__dirname, "..", "scripts", "github-action.sh");
const r = spawnSync("bash", [script, "stop"], { stdio: ["ignore", "inherit", "inherit"] });
process.exitCode = r.status === null ? 1 : r.status;
