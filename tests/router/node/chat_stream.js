// A Node gRPC client of RouterService, its stubs generated from protos/ at run time (@grpc/proto-loader):
// a tool-call round trip through ChatStream. Prints one JSON line per received chunk, then "END".
// Usage: node chat_stream.js HOST:PORT MODEL
"use strict";
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTOS = path.resolve(__dirname, "..", "..", "..", "protos");
const definition = protoLoader.loadSync("corral/v1/router_service.proto", {
  includeDirs: [PROTOS],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
  oneofs: true,
});
const corral = grpc.loadPackageDefinition(definition).corral.v1;

// google.protobuf.Struct from and to plain JSON (proto-loader keeps Struct's message shape; the
// well-known types' field names stay camelCase whatever keepCase says).
function toValue(v) {
  if (v === null) return { nullValue: "NULL_VALUE" };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  if (typeof v === "object") return { structValue: toStruct(v) };
  if (typeof v === "number") return { numberValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  return { stringValue: String(v) };
}
function toStruct(obj) {
  const fields = {};
  for (const [k, v] of Object.entries(obj)) fields[k] = toValue(v);
  return { fields };
}
function fromValue(v) {
  switch (v.kind) {
    case "structValue": return fromStruct(v.structValue);
    case "listValue": return (v.listValue.values || []).map(fromValue);
    case "numberValue": return v.numberValue;
    case "boolValue": return v.boolValue;
    case "nullValue": return null;
    default: return v.stringValue;
  }
}
function fromStruct(s) {
  const out = {};
  for (const [k, v] of Object.entries((s && s.fields) || {})) out[k] = fromValue(v);
  return out;
}

const [address, model] = process.argv.slice(2);
const client = new corral.RouterService(address, grpc.credentials.createInsecure());
const tool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather of a city",
    parameters: toStruct({
      type: "object",
      properties: { city: { type: "string" }, unit: { type: "string", enum: ["celsius", "fahrenheit"] } },
      required: ["city"],
    }),
  },
};

function chatStream(messages) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const call = client.ChatStream({ spec: { model, messages, tools: [tool] } });
    call.on("data", (chunk) => chunks.push(chunk));
    call.on("error", reject);
    call.on("end", () => resolve(chunks));
  });
}

function summary(chunk) {
  const message = chunk.message || {};
  return {
    done: Boolean(chunk.done),
    content: message.content || "",
    tool_calls: (message.tool_calls || []).map((c) => ({
      id: c.id, index: c.index || 0, name: c.name, arguments: fromStruct(c.arguments),
    })),
  };
}

(async () => {
  const question = { role: "user", content: "What is the weather in Tokyo?" };
  const first = (await chatStream([question])).map(summary);
  for (const line of first) console.log(JSON.stringify({ turn: 1, ...line }));
  const calls = first.flatMap((c) => c.tool_calls);
  const assistant = {
    role: "assistant",
    tool_calls: calls.map((c) => ({ id: c.id, index: c.index, name: c.name, arguments: toStruct(c.arguments) })),
  };
  const result = { role: "tool", content: "18 degrees, sunny", tool_name: "get_weather" };
  const second = (await chatStream([question, assistant, result])).map(summary);
  for (const line of second) console.log(JSON.stringify({ turn: 2, ...line }));
  console.log("END");
  client.close();
})().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
