// Shared by the scripts: where the gateway is, and printing one JSON result for pytest.
export const baseURL = process.env.GATEWAY_URL + "/v1";
export const apiKey = process.env.GATEWAY_KEY;
export const model = process.env.MODEL;

export function done(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
}

export async function run(main) {
  try {
    done(await main());
  } catch (err) {
    process.stderr.write(`${err?.stack || err}\n`);
    process.exit(1);
  }
}
