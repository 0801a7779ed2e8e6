// openai-node embeddings.create as users call it: no encoding_format, so the SDK asks for
// base64 and decodes the vectors itself; then again with "float" for comparison.
import OpenAI from "openai";
import { apiKey, baseURL, model, run } from "./common.mjs";

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const input = ["the quick brown fox", "jumps over"];

run(async () => {
  const byDefault = await client.embeddings.create({ model, input });
  const asFloat = await client.embeddings.create({ model, input, encoding_format: "float" });
  return {
    model: byDefault.model,
    default: byDefault.data.map((d) => Array.from(d.embedding)),
    float: asFloat.data.map((d) => d.embedding),
  };
});
