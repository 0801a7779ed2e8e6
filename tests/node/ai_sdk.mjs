// The Vercel AI SDK as its docs show it: createOpenAI({ baseURL, apiKey }). argv[2] picks
// the API (responses: the default provider(model); chat: provider.chat(model)) and argv[3]
// generateText or streamText.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText } from "ai";
import { apiKey, baseURL, model, run } from "./common.mjs";

const [api, call] = process.argv.slice(2);
const provider = createOpenAI({ baseURL, apiKey });
const languageModel = api === "chat" ? provider.chat(model) : provider(model);
const prompt = "one two three";

run(async () => {
  if (call === "generate") {
    const result = await generateText({ model: languageModel, prompt, maxRetries: 0 });
    return { text: result.text, finishReason: result.finishReason, usage: result.usage };
  }
  const errors = [];
  const result = streamText({ model: languageModel, prompt, maxRetries: 0,
                              onError: ({ error }) => errors.push(error) });
  let text = "";
  for await (const part of result.textStream) text += part;
  if (errors.length) throw errors[0];
  return { text, finishReason: await result.finishReason, usage: await result.usage };
});
