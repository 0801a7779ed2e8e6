// openai-node chat.completions.create, whole and streamed.
import OpenAI from "openai";
import { apiKey, baseURL, model, run } from "./common.mjs";

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const messages = [{ role: "user", content: "one two three" }];

run(async () => {
  const whole = await client.chat.completions.create({ model, messages });
  const stream = await client.chat.completions.create({
    model, messages, stream: true, stream_options: { include_usage: true },
  });
  let text = "";
  const models = new Set();
  let usage = null;
  for await (const chunk of stream) {
    models.add(chunk.model);
    text += chunk.choices[0]?.delta?.content ?? "";
    usage = chunk.usage ?? usage;
  }
  return {
    model: whole.model,
    content: whole.choices[0].message.content,
    finish_reason: whole.choices[0].finish_reason,
    stream_text: text,
    stream_models: [...models],
    stream_usage: usage,
  };
});
