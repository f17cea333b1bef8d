// Runs scripts/github-action.sh start with the action's inputs (GitHub
// passes them as INPUT_* variables). All logic lives in the script.
const { spawnSync } = require("node:child_process");
const path = require("node:path");

const script = path.join(__dirname, "..", "scripts", "github-action.sh");
const r = spawnSync("bash", [script, process.argv[2] || "start"], { stdio: ["ignore", "inherit", "inherit"] });
process.exitCode = r.status === null ? 1 : r.status;
