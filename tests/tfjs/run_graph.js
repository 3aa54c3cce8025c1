// Runs a TensorFlow.js graph model with TensorFlow.js itself (pure JavaScript CPU backend) on raw
// float32 inputs, so tests can compare facesearch's torch port with it.
// Usage: node run_graph.js MODEL_JSON INPUT_F32 OUTPUT_F32 N,H,W,C
// The weight shards are read from MODEL_JSON's folder; the output is the signature's first output.
'use strict';
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

async function main() {
  const [modelJson, inputFile, outputFile, shapeText] = process.argv.slice(2);
  const spec = JSON.parse(fs.readFileSync(modelJson, 'utf8'));
  const weightSpecs = spec.weightsManifest.flatMap((group) => group.weights);
  const shards = spec.weightsManifest.flatMap((group) => group.paths)
    .map((name) => fs.readFileSync(path.join(path.dirname(modelJson), name)));
  const weights = Buffer.concat(shards);
  const weightData = weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength);
  await tf.setBackend('cpu');
  const model = await tf.loadGraphModel(tf.io.fromMemory({ modelTopology: spec.modelTopology, weightSpecs, weightData }));
  const raw = fs.readFileSync(inputFile);
  const values = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  const input = tf.tensor(values, shapeText.split(',').map(Number), 'float32');
  const output = model.execute(input);
  const result = await output.data();
  fs.writeFileSync(outputFile, Buffer.from(result.buffer, result.byteOffset, result.byteLength));
  console.log(output.shape.join(','));
}

main().catch((error) => { console.error(error); process.exit(1); });
